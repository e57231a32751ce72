"""The streamed test pass: bounded chunks of the memory-mapped pack -> kernel -> a reused buffer -> ONNX Runtime.

Memory must not grow with the number of images (a user's set may be ten times
FERG-DB's 11 GB). The kernel reads each chunk's images straight out of the
memory-mapped pack by index (no gathered copy) into one of two float buffers
allocated once; ONNX Runtime runs on that buffer. With a ``FrontSplit`` the
kernel also runs the model's leading convolutions, image by image straight
from the pack (``xfer.bench.front``), the buffers hold their features, and
ONNX Runtime runs only the rest. With ``overlap`` a background
thread preprocesses chunk k+1 while ONNX Runtime infers chunk k (both release
the GIL). Pages of the pack that were read stay mapped, and count in RSS, until
the mapping is told to drop them, and a fault maps a whole large folio of the
page cache (2 MB for a pack read back from disk, ten 256x256 images), most of
it images outside the split. A split whose own bytes fit 1.75x
``release_bytes`` stays mapped: once the mapping has grown past what was kept,
the pages between its images are dropped, so after the first pass nothing
faults and RSS holds the split alone. A larger split is read in pieces and,
once the pass's resident file pages have grown past 1.75x ``release_bytes``,
the mapping is released after every piece (the bytes stay in the page cache;
touching them again costs minor faults, not disk reads) -- where the pack's
file can be read by descriptor, its images are then read with pread into
per-thread buffers instead and nothing is mapped: copying out of the page
cache costs less than re-faulting. ONNX Runtime's own
memory grows with the chunk (about 280 KB per image for LeNet-5 at 32x32), so
chunks stay at 1,024 images or fewer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from xfer.bench.front import FrontRunner, FrontSplit
from xfer.bench.inputs import TestSplit
from xfer.bench.memory import mapped_file_bytes, mapping_of, peak_rss_bytes, peak_rss_reset
from xfer.bench.session import session
from xfer.bench.timing import PathResult, timed
from xfer.graph import InputSpec
from xfer.preprocess import preprocess, preprocess_file, read_floor, read_floor_file
from xfer.records import Record

CHUNKS = (512, 1024)  # ORT's activations grow with the chunk: 2,048 took peak RSS to 0.9 GB, 4,096 to 1.4 GB
TUNE_IMAGES = 8192  # images a schedule trial streams
WATCH = 1.75  # x release_bytes: the resident file pages a pass may hold before it releases or trims
TRIM_SLACK = 32 << 20  # bytes the mapping may grow past what a resident split keeps before its gaps are dropped


@dataclass(frozen=True)
class StreamPlan:
    """How the pass is cut and scheduled; ``tune_stream`` picks these by measurement."""

    chunk: int = CHUNKS[-1]
    overlap: bool = False
    kernel_threads: int = 0
    release_bytes: int = 256 << 20
    pread: bool = True  # a split over the watch read by pread (where the file allows) rather than re-mapped


def gaps_between(images: np.ndarray, mapping: mmap.mmap, split: np.ndarray) -> list[tuple[int, int]]:
    """(offset, length) in ``mapping`` of the whole pages holding none of the (sorted, unique) ``split`` images."""
    base = np.frombuffer(mapping, np.uint8).ctypes.data
    page, size = mmap.PAGESIZE, len(mapping)
    image = int(np.prod(images.shape[1:]))
    starts = images.ctypes.data - base + split.astype(np.int64) * image
    lo = np.concatenate([[0], -(-(starts + image) // page) * page])  # a gap starts where an image's last page ends
    hi = np.concatenate([starts // page * page, [size]])              # and ends where the next image's first begins
    keep = hi > lo
    return [(int(a), int(b - a)) for a, b in zip(lo[keep], hi[keep], strict=True)]


class Stream:
    """The test split's images, cycled to ``n``, as chunks of indices into the (memory-mapped) pack."""

    def __init__(self, images: np.ndarray, order: np.ndarray, n: int, spec: InputSpec, plan: StreamPlan,
                 front: FrontSplit | None = None) -> None:
        self.images, self.order, self.n, self.plan = images, np.asarray(order, np.int64), int(n), plan
        self.size, self.channels = (int(spec.size[0]), int(spec.size[1])), int(spec.channels)
        self.mean, self.std = list(spec.mean), list(spec.std)
        rows = min(plan.chunk, self.n)
        self.front = FrontRunner(front, spec, plan.kernel_threads) if front is not None else None
        self.buffers = [np.empty((rows, self.channels, *self.size), np.float32) if self.front is None
                        else self.front.buffer(rows) for _ in range(2 if plan.overlap else 1)]
        self.image_bytes = int(np.prod(images.shape[1:]))
        self.mapping = mapping_of(images) if images.nbytes > plan.release_bytes else None
        split = np.unique(self.order)
        self.split_bytes = len(split) * self.image_bytes
        self.resident = self.split_bytes <= WATCH * plan.release_bytes
        self.gaps: list[tuple[int, int]] = []
        if self.mapping is not None and self.resident:
            # a folio mapped by one PMD is unmapped whole by a partial DONTNEED, the split's pages with it: PTEs only
            with contextlib.suppress(AttributeError, OSError):  # Linux only; elsewhere nothing maps a PMD
                self.mapping.madvise(mmap.MADV_NOHUGEPAGE)
            self.gaps = gaps_between(images, self.mapping, split)
        self.file_offset = 0  # where the images start in the file read by pread
        self.fd = self._file() if plan.pread and self.mapping is not None and not self.resident else None
        self.releasing = False
        self.settled = False  # a resident split's pass mapped nothing new: whole chunks, no checks between pieces
        self.file_start = self.kept = mapped_file_bytes()
        self.piece = max(1, plan.release_bytes // (5 * self.image_bytes))
        self.releases = self.trims = 0

    def _file(self) -> int | None:
        """A descriptor of the pack's file for pread (closed with the stream), or None where the images are not a
        whole memory-mapped file array or the platform has no pread."""
        im, mapping = self.images, self.mapping
        if not isinstance(im, np.memmap) or not im.filename or not im.flags.c_contiguous or not hasattr(os, "pread"):
            return None
        if mapping is None or im.ctypes.data != np.frombuffer(mapping, np.uint8).ctypes.data + im.offset % mmap.ALLOCATIONGRANULARITY:
            return None  # a view into the file's array: its offset is not where its bytes start
        try:
            fd = os.open(im.filename, os.O_RDONLY)
        except OSError:
            return None
        weakref.finalize(self, os.close, fd)
        self.file_offset = int(im.offset)
        return fd

    def chunks(self) -> list[tuple[int, int]]:
        c = self.plan.chunk
        return [(a, min(a + c, self.n)) for a in range(0, self.n, c)]

    def index(self, a: int, b: int) -> np.ndarray:
        return self.order[np.arange(a, b) % len(self.order)]

    def _pieces(self, n: int) -> list[tuple[int, int]]:
        """A chunk of n in pieces read between releases (the whole chunk when the mapping is never released, or
        when a resident split's last pass faulted nothing in: each call costs the threads a block's wait at its end)."""
        whole = self.mapping is None or self.settled or self.fd is not None
        step = n if whole else self.piece  # pieces, so RSS is checked between them
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _release(self) -> None:
        if self.mapping is None or self.fd is not None:
            return
        now = mapped_file_bytes()
        if self.resident:
            if now - self.kept > TRIM_SLACK:  # folios brought neighbours of the split's images in: drop them
                for start, length in self.gaps:
                    self.mapping.madvise(mmap.MADV_DONTNEED, start, length)
                self.kept = mapped_file_bytes()
                self.trims += 1
            return
        if not self.releasing and now - self.file_start > WATCH * self.plan.release_bytes:
            self.releasing = True
        if self.releasing:
            self.mapping.madvise(mmap.MADV_DONTNEED)
            self.releases += 1

    def preprocess(self, k: int, a: int, b: int) -> np.ndarray:
        """Chunk [a, b) into buffer ``k`` (preprocessed, or the front's features); returns the filled view."""
        out, index = self.buffers[k][: b - a], self.index(a, b)
        for i, j in self._pieces(b - a):
            if self.front is None and self.fd is not None:
                preprocess_file(self.fd, self.file_offset, self.images.shape, index[i:j], self.size, self.channels,
                                self.mean, self.std, out=out[i:j], threads=self.plan.kernel_threads)
            elif self.front is None:
                preprocess(self.images, self.size, self.channels, self.mean, self.std, out=out[i:j],
                           threads=self.plan.kernel_threads, index=index[i:j])
            elif self.fd is not None:
                self.front.from_file(self.fd, self.file_offset, self.images.shape, index[i:j], out[i:j])
            else:
                self.front(self.images, index[i:j], out[i:j])
            self._release()
        return out

    def read(self, a: int, b: int) -> None:
        """Read chunk [a, b)'s bytes once and nothing else, as ``preprocess`` reads them (by pread, or from the
        mapping, released as it releases): the memory floor."""
        index = self.index(a, b)
        for i, j in self._pieces(b - a):
            if self.fd is not None:
                read_floor_file(self.fd, self.file_offset, self.images.shape, index[i:j], self.plan.kernel_threads)
            else:
                read_floor(self.images, self.plan.kernel_threads, index[i:j])
            self._release()

    def _infer(self, sess: Any, name: str, x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x if self.front is None else self.front.head_input(x)})[0].argmax(1)

    def run(self, sess: Any) -> np.ndarray:
        """One pass: predictions (argmax) for every streamed image."""
        start = mapped_file_bytes()
        preds = self._run(sess)
        self._settle(start)
        return preds

    def each_chunk(self, fn: Callable[[int, int], object]) -> None:
        """``fn(a, b)`` for every chunk: one pass (``read`` for the memory floor, ``preprocess`` for the kernel
        alone), which settles the stream as ``run`` does."""
        start = mapped_file_bytes()
        for a, b in self.chunks():
            fn(a, b)
        self._settle(start)

    def _settle(self, start: int) -> None:
        if self.mapping is not None and self.resident:
            self.settled = mapped_file_bytes() - start <= TRIM_SLACK

    def _run(self, sess: Any) -> np.ndarray:
        name = sess.get_inputs()[0].name
        preds = np.empty(self.n, np.int64)
        chunks = self.chunks()
        if not self.plan.overlap:
            for a, b in chunks:
                preds[a:b] = self._infer(sess, name, self.preprocess(0, a, b))
            return preds
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self.preprocess, 0, *chunks[0])
            for i, (a, b) in enumerate(chunks):
                x = pending.result()
                if i + 1 < len(chunks):  # buffer (i+1)%2 was last read by the run of chunk i-1, which has returned
                    pending = pool.submit(self.preprocess, (i + 1) % 2, *chunks[i + 1])
                preds[a:b] = self._infer(sess, name, x)
        return preds


@dataclass
class TimedPasses:
    times: list[float]
    predictions: np.ndarray
    peak_rss: int    # bytes, over the timed passes
    rss_before: int  # bytes, when they started


def timed_passes(stream: Stream, sess: Any, repeat: int) -> TimedPasses:
    """The stream's passes after one warm-up, with the peak RSS over the timed ones."""
    stream.run(sess)
    peak_rss_reset()
    before = peak_rss_bytes("VmRSS")
    times, preds = timed(lambda: stream.run(sess), repeat, warmup=0)
    return TimedPasses(times, preds, peak_rss_bytes(), before)


@dataclass(frozen=True)
class StreamChoice(Record):
    """A schedule for the streamed pass: how it is cut, ORT's threads, whether idle ORT threads spin."""

    chunk: int
    overlap: bool
    kernel_threads: int
    ort_threads: int
    spinning: bool

    @property
    def plan(self) -> StreamPlan:
        return StreamPlan(self.chunk, self.overlap, self.kernel_threads)


@dataclass(frozen=True)
class StreamTrial(StreamChoice):
    images_per_s: float = 0.0


def stream_candidates(cores: int) -> list[StreamChoice]:
    """Schedules to try: overlapped (kernel on one core beside ORT) or in turn (both on every core)."""
    out = []
    for chunk in CHUNKS:
        for spinning in (False, True):
            out.append(StreamChoice(chunk, True, 1, max(1, cores - 1), spinning))
            out.append(StreamChoice(chunk, False, cores, cores, spinning))
    return out


def stream_of(split: TestSplit, spec: InputSpec, plan: StreamPlan, n: int | None = None,
              front: FrontSplit | None = None) -> Stream:
    return Stream(split.images, split.order, n or split.n, spec, plan, front)


def tune_stream(model_bytes: bytes, split: TestSplit, spec: InputSpec, cores: int,
                front: FrontSplit | None = None) -> tuple[StreamChoice, list[StreamTrial]]:
    """Pick the stream's chunk, schedule and ORT spinning by measurement on up to ``TUNE_IMAGES`` of its images
    (with ``front``, for the kernel's convolutions and the head ``model_bytes`` is)."""
    n = min(split.n, TUNE_IMAGES)
    trials = []
    for c in stream_candidates(cores):
        stream = stream_of(split, spec, c.plan, n, front)
        sess = session(model_bytes, c.ort_threads, spinning=c.spinning)
        times, _ = timed(partial(stream.run, sess), repeat=2)
        trials.append(StreamTrial(**vars(c), images_per_s=n / min(times)))
    best = max(trials, key=lambda t: t.images_per_s)
    return StreamChoice(best.chunk, best.overlap, best.kernel_threads, best.ort_threads, best.spinning), trials


def streamed_pass(model_bytes: bytes, split: TestSplit, spec: InputSpec, choice: StreamChoice, repeat: int,
                  front: FrontSplit | None = None) -> PathResult:
    """The timed streamed pass with the chosen schedule: times, accuracy and peak RSS. With ``front``, the kernel
    runs its convolutions and ``model_bytes`` is the head the split left for ONNX Runtime."""
    stream = stream_of(split, spec, choice.plan, front=front)
    p = timed_passes(stream, session(model_bytes, choice.ort_threads, spinning=choice.spinning), repeat)
    passes = len(p.times) + 1  # the warm-up too
    return PathResult.of(p.times, split.n, float((p.predictions == split.truth).mean()), peak_rss_mb=p.peak_rss / 2**20,
                         rss_before_mb=p.rss_before / 2**20, **vars(choice), releases=stream.releases,
                         trims=stream.trims, resident=stream.resident, split_mb=stream.split_bytes / 2**20,
                         watch_mb=WATCH * choice.plan.release_bytes / 2**20, releases_per_pass=stream.releases / passes,
                         pread=stream.fd is not None)


def pages_note(p: PathResult) -> str | None:
    """How a streamed pass held the pack's pages (kept mapped, or released and re-faulted), for the report; None for
    a pass that did not stream or a pack small enough to need no watching."""
    d = p.details
    if "resident" not in d or (not d.get("releases") and not d.get("trims") and d["resident"]):
        return None
    if d["resident"]:
        return (f"the test split's {d['split_mb']:,.0f} MB stayed mapped; its neighbours' pages, which large folios "
                f"map too, were dropped {d['trims']} time(s)")
    if d.get("pread"):
        return (f"the test split's {d['split_mb']:,.0f} MB is over the {d['watch_mb']:,.0f} MB watch: its images were "
                f"read with pread into per-thread buffers, nothing mapped")
    return (f"the test split's {d['split_mb']:,.0f} MB is over the {d['watch_mb']:,.0f} MB watch: the mapping was "
            f"released {d['releases_per_pass']:.0f} times a pass and re-faulted (minor faults, not disk reads)")
