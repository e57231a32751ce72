"""The streamed test pass: bounded chunks of the memory-mapped pack -> kernel -> a reused buffer -> ONNX Runtime.

Memory must not grow with the number of images (a user's set may be ten times
FERG-DB's 11 GB). The kernel reads each chunk's images straight out of the
memory-mapped pack by index (no gathered copy) into one of two float buffers
allocated once; ONNX Runtime runs on that buffer. With ``overlap`` a background
thread preprocesses chunk k+1 while ONNX Runtime infers chunk k (both release
the GIL). Pages of the pack that were read stay mapped, and count in RSS,
until the mapping is told to drop them: once the pass's resident file pages
have grown past 1.75x ``release_bytes``, the mapping is released after
every piece of a chunk (the bytes stay in the page cache; touching them again
costs minor faults, not disk reads). ONNX Runtime's own memory grows with the
chunk (about 280 KB per image for LeNet-5 at 32x32), so chunks
stay at 1,024 images or fewer.
"""

from __future__ import annotations

import mmap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StreamPlan:
    """How the pass is cut and scheduled; ``xfer.bench`` picks these by measurement."""

    chunk: int = 1024
    overlap: bool = False
    kernel_threads: int = 0
    release_bytes: int = 256 << 20


def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux ``clear_refs`` 5); False where unsupported.

    Heap that earlier work freed (sessions tried while tuning) is handed back to the system first
    (glibc ``malloc_trim``), so the peak that follows is the pass's own.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(field: str = "VmHWM") -> int:
    """This process's peak resident set size since start or the last reset (``VmRSS``: the current one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mapped_file_bytes() -> int:
    """Resident file-backed bytes now (``/proc/self/statm``'s shared pages: the mapped pack, libraries): cheap enough
    to read between pieces; 0 where unavailable."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[2]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def _mapping(images: np.ndarray) -> mmap.mmap | None:
    """The mmap behind a memory-mapped array (``np.load(mmap_mode='r')``), or None for an in-memory one."""
    base = images
    while base is not None:
        if isinstance(getattr(base, "_mmap", None), mmap.mmap):
            return base._mmap
        base = getattr(base, "base", None)
    return None


class Stream:
    """The test split's images, cycled to ``n``, as chunks of indices into the (memory-mapped) pack."""

    def __init__(self, images: np.ndarray, order: np.ndarray, n: int, size: tuple[int, int], channels: int,
                 mean, std, plan: StreamPlan) -> None:
        self.images, self.order, self.n, self.plan = images, np.asarray(order, np.int64), int(n), plan
        self.size, self.channels, self.mean, self.std = tuple(size), int(channels), list(mean), list(std)
        rows = min(plan.chunk, self.n)
        self.buffers = [np.empty((rows, self.channels, *self.size), np.float32) for _ in range(2 if plan.overlap else 1)]
        self.image_bytes = int(np.prod(images.shape[1:]))
        # Pages read stay mapped until released. A fault may map a whole large folio of the page cache (Linux 6.x,
        # freshly written files): reading 1,024 scattered images (201 MB) mapped ~870 MB. So the pass reads in
        # pieces of a fifth of the budget and watches its resident file pages: once they have grown past 1.75x the
        # budget, the mapping is released after every piece. Re-faulting costs (~0.2 s per 2 GB here), so a split
        # whose pages fit stays mapped. A pack within the budget never needs watching.
        self.mapping = _mapping(images) if images.nbytes > plan.release_bytes else None
        self.releasing = False
        self.file_start = _mapped_file_bytes()
        self.piece = max(1, plan.release_bytes // (5 * self.image_bytes))
        self.releases = 0

    def chunks(self) -> list[tuple[int, int]]:
        c = self.plan.chunk
        return [(a, min(a + c, self.n)) for a in range(0, self.n, c)]

    def index(self, a: int, b: int) -> np.ndarray:
        return self.order[np.arange(a, b) % len(self.order)]

    def _pieces(self, a: int, b: int) -> list[tuple[int, int]]:
        """Chunk [a, b) in pieces read between releases (the whole chunk when the mapping is never released)."""
        step = (b - a) if self.mapping is None else self.piece  # pieces, so RSS is checked between them
        return [(i, min(i + step, b - a)) for i in range(0, b - a, step)]

    def _release(self) -> None:
        if self.mapping is None:
            return
        if not self.releasing and _mapped_file_bytes() - self.file_start > 1.75 * self.plan.release_bytes:
            self.releasing = True
        if self.releasing:
            self.mapping.madvise(mmap.MADV_DONTNEED)
            self.releases += 1

    def preprocess(self, k: int, a: int, b: int) -> np.ndarray:
        """Chunk [a, b) into buffer ``k``; returns the filled view."""
        from xfer.preprocess import preprocess

        out, index = self.buffers[k][: b - a], self.index(a, b)
        for i, j in self._pieces(a, b):
            preprocess(self.images, self.size, self.channels, self.mean, self.std, out=out[i:j],
                       threads=self.plan.kernel_threads, index=index[i:j])
            self._release()
        return out

    def read(self, a: int, b: int) -> None:
        """Read chunk [a, b)'s bytes once and nothing else, released as ``preprocess`` releases: the memory floor."""
        from xfer import _C

        index = self.index(a, b)
        for i, j in self._pieces(a, b):
            _C.read_floor(self.images, self.plan.kernel_threads, index[i:j])
            self._release()

    def run(self, sess) -> np.ndarray:
        """One pass: predictions (argmax) for every streamed image."""
        name = sess.get_inputs()[0].name
        preds = np.empty(self.n, np.int64)
        chunks = self.chunks()
        if not self.plan.overlap:
            for a, b in chunks:
                preds[a:b] = sess.run(None, {name: self.preprocess(0, a, b)})[0].argmax(1)
            return preds
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self.preprocess, 0, *chunks[0])
            for i, (a, b) in enumerate(chunks):
                x = pending.result()
                if i + 1 < len(chunks):  # buffer (i+1)%2 was last read by the run of chunk i-1, which has returned
                    pending = pool.submit(self.preprocess, (i + 1) % 2, *chunks[i + 1])
                preds[a:b] = sess.run(None, {name: x})[0].argmax(1)
        return preds


def timed_passes(stream: Stream, sess, repeat: int) -> tuple[list[float], np.ndarray, int, int]:
    """(seconds per pass after one warm-up, the predictions, peak RSS over the timed passes, RSS before them)."""
    preds = stream.run(sess)
    peak_rss_reset()
    before = peak_rss_bytes("VmRSS")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        preds = stream.run(sess)
        times.append(time.perf_counter() - t)
    return times, preds, peak_rss_bytes(), before
