"""The streamed test pass: same predictions as the gathered one, bounded mapped memory, the floors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xfer import bench
from xfer.bench.floors import floors
from xfer.bench.memory import peak_rss_bytes
from xfer.bench.stream import Stream, StreamPlan, pages_note
from xfer.bench.timing import PathResult
from xfer.errors import XferError
from xfer.graph import input_spec, load_model
from xfer.preprocess import read_floor


def _spec(model_path):
    model = load_model(model_path)
    return model, input_spec(model, model_path)


@pytest.mark.parametrize("plan", [StreamPlan(16, False, 1), StreamPlan(16, True, 1), StreamPlan(1000, True, 2)],
                         ids=["in-turn", "overlapped", "one-chunk"])
def test_stream_predicts_what_the_gathered_pass_predicts(trained_frozen, synth_pack, plan):
    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 100)  # 42 test images cycled: the chunks wrap around the split
    sess = bench.session(model.SerializeToString(), 1, spinning=False)
    streamed = Stream(split.images, split.order, split.n, spec, plan).run(sess)
    g = bench.load_test_images(model, str(synth_pack), 100)
    from xfer.preprocess import preprocess

    gathered = bench.infer(sess, preprocess(g.images, spec.size, spec.channels, spec.mean, spec.std), 32)
    np.testing.assert_array_equal(streamed, gathered)


def test_mapped_pages_are_released_when_the_pack_exceeds_the_budget(trained_frozen, synth_pack):
    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 200)
    small = Stream(split.images, split.order, split.n, spec, StreamPlan(8, False, 1, release_bytes=1 << 20, pread=False))
    big = Stream(split.images, split.order, split.n, spec, StreamPlan(8, False, 1, release_bytes=1 << 40))
    sess = bench.session(model.SerializeToString(), 1, spinning=False)
    np.testing.assert_array_equal(small.run(sess), big.run(sess))
    assert small.releases > 0 and big.releases == 0  # the pack fits a large budget: kept mapped
    d = {"releases": small.releases, "trims": 0, "resident": small.resident, "split_mb": small.split_bytes / 2**20,
         "watch_mb": 1.75, "releases_per_pass": small.releases / 1}
    assert pages_note(PathResult.of([1.0], 200, **d)) == (
        f"the test split's 8 MB is over the 2 MB watch: the mapping was released {small.releases} times a pass and "
        "re-faulted (minor faults, not disk reads)")
    assert pages_note(PathResult.of([1.0], 200)) is None
    assert small.mapping is not None and big.mapping is None  # the pack really is memory-mapped


@pytest.mark.skipif(not hasattr(__import__("os"), "pread"), reason="needs POSIX pread")
def test_a_split_over_the_watch_is_read_by_pread(trained_frozen, synth_pack):
    """Re-faulting a released mapping costs more than copying the bytes out of the page cache, so a split over the
    watch reaches the kernel (and its front) by pread: the same predictions, nothing released, nothing mapped."""
    from xfer.bench.front import split_front

    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 200)
    cut = split_front(model)
    assert cut is not None
    head = bench.session(cut.head.SerializeToString(), 1, spinning=False)
    over = Stream(split.images, split.order, split.n, spec, StreamPlan(8, False, 2, release_bytes=1 << 20), cut)
    kept = Stream(split.images, split.order, split.n, spec, StreamPlan(8, False, 2, release_bytes=1 << 40), cut)
    assert over.fd is not None and kept.fd is None and not over.resident
    np.testing.assert_array_equal(over.run(head), kept.run(head))
    assert over.releases == 0 and over._pieces(8) == [(0, 8)]
    whole = bench.session(model.SerializeToString(), 1, spinning=False)
    np.testing.assert_array_equal(over.run(head), Stream(split.images, split.order, split.n, spec,
                                                         StreamPlan(8, False, 1)).run(whole))
    d = {"releases": 0, "trims": 0, "resident": False, "split_mb": 8.0, "watch_mb": 1.75, "pread": True}
    assert pages_note(PathResult.of([1.0], 200, **d)) == (
        "the test split's 8 MB is over the 2 MB watch: its images were read with pread into per-thread buffers, "
        "nothing mapped")
    plain = Stream(split.images, split.order, split.n, spec, StreamPlan(8, False, 2, release_bytes=1 << 20))
    assert plain.fd is not None  # without a front too: the kernel alone reads by pread
    np.testing.assert_array_equal(plain.run(whole), Stream(split.images, split.order, split.n, spec,
                                                           StreamPlan(8, False, 1)).run(whole))
    assert plain.releases == 0
    view = split.images[1:]  # a view: its offset is not where its bytes start, so it is read through the mapping
    assert Stream(view, split.order[split.order > 0] - 1, 50, spec, StreamPlan(8, False, 1, release_bytes=1 << 20),
                  cut).fd is None


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    import re
    from pathlib import Path

    blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path("/proc/self/smaps").read_text())
    return sum(int(re.search(r"^Rss:\s+(\d+) kB", b, re.M).group(1)) for b in blocks if b.split("\n")[0].endswith(str(path)))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux smaps")
def test_a_split_that_fits_stays_mapped_without_its_neighbours(trained_frozen, synth_pack, monkeypatch):
    """Folios map neighbours of the split's images too; the resident pass drops those pages and keeps the split's."""
    import mmap

    from xfer.bench import stream as stream_mod

    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 100)
    monkeypatch.setattr(stream_mod, "TRIM_SLACK", -1)  # trim after every piece, whatever the folios
    s = Stream(split.images, split.order, split.n, spec, StreamPlan(16, False, 1, release_bytes=8 << 20))
    sess = bench.session(model.SerializeToString(), 1, spinning=False)
    pack_file = Path(synth_pack) / "images.npy"
    assert s.resident and s.mapping is not None  # 42 test images (8.3 MB) fit 1.75 x 8 MB; the pack (25 MB) does not
    expected = Stream(split.images, split.order, split.n, spec, StreamPlan(16, False, 1, release_bytes=1 << 40)).run(sess)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(sess), expected)
    assert s.trims > 0 and s.releases == 0
    note = pages_note(PathResult.of([1.0], 100, trims=s.trims, releases=0, resident=True, split_mb=8.25))
    assert note == f"the test split's 8 MB stayed mapped; its neighbours' pages, which large folios map too, were " \
                   f"dropped {s.trims} time(s)"
    page, image = mmap.PAGESIZE, s.image_bytes
    start = split.images.ctypes.data - np.frombuffer(s.mapping, np.uint8).ctypes.data
    pages = {p for i in np.unique(split.order) for p in range((start + i * image) // page,
                                                               (start + (i + 1) * image - 1) // page + 1)}
    assert _mapped_kib(pack_file) * 1024 == len(pages) * page  # the split's pages, every one of them, and no others
    offsets = [g[0] for g in s.gaps]
    assert offsets == sorted(offsets) and all(g[0] % page == 0 and g[1] > 0 for g in s.gaps)


def test_a_settled_resident_split_reads_whole_chunks(trained_frozen, synth_pack, monkeypatch):
    """Once a pass of a resident split maps nothing new, chunks are read whole (no RSS checks between pieces, each
    of which cost the threads a wait at its end); a pass that maps more goes back to pieces."""
    from xfer.bench import stream as stream_mod

    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 100)
    s = Stream(split.images, split.order, split.n, spec, StreamPlan(16, False, 1, release_bytes=8 << 20))
    sess = bench.session(model.SerializeToString(), 1, spinning=False)
    assert s.resident and not s.settled and len(s._pieces(16)) > 1
    expected = s.run(sess)
    assert s.settled and s._pieces(16) == [(0, 16)]  # the 25 MB pack maps under TRIM_SLACK past the first pass
    np.testing.assert_array_equal(s.run(sess), expected)
    grown = iter(range(0, 1 << 40, 64 << 20))  # as if every look found 64 MB more mapped
    monkeypatch.setattr(stream_mod, "mapped_file_bytes", lambda: next(grown))
    np.testing.assert_array_equal(s.run(sess), expected)
    assert not s.settled and len(s._pieces(16)) > 1
    monkeypatch.undo()
    floor = Stream(split.images, split.order, split.n, spec, StreamPlan(16, False, 1, release_bytes=8 << 20))
    floor.each_chunk(floor.read)  # the read floor's pass settles the same way, so it reads as the pass does
    assert floor.settled


def test_the_kernel_takes_an_index_into_a_batch(rng):
    from xfer.preprocess import preprocess

    x = rng.integers(0, 256, (10, 40, 30, 3), dtype=np.uint8)
    idx = np.array([9, 0, 9, 4], np.int64)
    np.testing.assert_array_equal(preprocess(x, 8, 1, index=idx), preprocess(np.ascontiguousarray(x[idx]), 8, 1))
    with pytest.raises(ValueError, match=r"index\[1\]: -1 is out of range for a batch of 10 images"):
        preprocess(x, 8, 1, index=np.array([0, -1], np.int64))
    with pytest.raises(TypeError, match="index: expected dtype int64, got int32"):
        preprocess(x, 8, 1, index=np.array([0], np.int32))
    with pytest.raises(TypeError, match="index: needs images as a 4-D numpy batch"):
        preprocess(list(x), 8, 1, index=idx)


def test_read_floor_reads_every_byte(rng):
    x = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    a = read_floor(x, 2)
    y = x.copy()
    y[5, 8, 6, 2] ^= 1  # the very last byte
    assert read_floor(y, 2) != a and read_floor(x, 1) == a
    assert read_floor(x, 0, np.array([3, 3], np.int64)) == 0  # the same image twice folds to zero


def test_model_macs_counts_lenet(lenet_onnx):
    model = load_model(lenet_onnx)
    # conv1 6@5x5 pad 2 on 28x28, conv2 16@5x5 on 14x14 -> 10x10, FC 400-120-84-10
    expected = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert bench.model_macs(model) == expected
    peak, how = bench.peak_flops()
    assert peak > 1e9 and "GHz" in how


def test_scaling_keeps_memory_flat(trained_frozen, synth_pack):
    # both sizes over the largest chunk; the lead's kind of pass: the kernel runs the convolutions
    points = bench.scaling(trained_frozen, str(synth_pack), [1100, 5500], repeat=1, path="stream_front")
    assert [p.images for p in points] == [1100, 5500] and {p.path for p in points} == {"stream_front"}
    assert points[1].peak_rss_mb < points[0].peak_rss_mb + 32  # five times the images, not five times the memory
    assert 0 < peak_rss_bytes() / 2**20 < 4096


def test_scaling_runs_the_pass_it_is_asked_for_or_says_why_not(trained_frozen, synth_pack):
    with pytest.raises(XferError, match=r"unknown streamed pass 'stream_gpu' \(expected one of: stream, stream_int8"):
        bench.scaling(trained_frozen, str(synth_pack), [100], path="stream_gpu")
    with pytest.raises(XferError, match=r"stream_int8 streams .*\.int8\.onnx, which is missing \(`xfer optimize --int8`"):
        bench.scaling(trained_frozen, str(synth_pack), [100], path="stream_int8")


def test_scaling_follows_the_lead_to_its_streamed_pass():
    from types import SimpleNamespace

    def rep(lead, **times):
        return SimpleNamespace(xfer=lead, paths={k: SimpleNamespace(median_s=t) for k, t in times.items()})

    assert bench.streamed_lead(rep("stream_front_int8", stream_front_int8=0.3)) == "stream_front_int8"
    # a gathered pass led: the faster streamed pass of the same (int8) model, never the float one
    assert bench.streamed_lead(rep("kernel+ort_int8", stream_int8=0.5, stream_front_int8=0.4, stream=0.1)) == \
        "stream_front_int8"
    assert bench.streamed_lead(rep("kernel+ort", stream=0.6, stream_front=0.7, stream_int8=0.1)) == "stream"
    assert bench.streamed_lead(rep("kernel+ort_front_int8", stream_int8=0.5, stream_front_int8=0.4)) == \
        "stream_front_int8"


def test_the_read_floor_of_a_split_over_the_watch_reads_pages_kept_mapped(trained_frozen, synth_pack):
    """Re-mapping a split too big to keep costs more than reading it: that is reported, but the floor is the read."""
    model, spec = _spec(trained_frozen)
    split = bench.test_split(model, str(synth_pack), 100)
    over = floors(model, split, spec, StreamPlan(16, False, 1, release_bytes=1 << 20, pread=False), repeat=1)  # 8.3 MB
    assert over["read_remapped"].details["releases_per_pass"] > 0
    assert over["read"].details["images_kept_mapped"] == int(1.75 * (1 << 20)) // split.image_bytes
    assert over["read"].details["bytes"] == over["read_remapped"].details["bytes"] == 100 * split.image_bytes
    by_pread = floors(model, split, spec, StreamPlan(16, False, 1, release_bytes=1 << 20), repeat=1)
    assert by_pread["read_pread"].details["releases_per_pass"] == 0 and "read_remapped" not in by_pread
    assert by_pread["read"].details["images_kept_mapped"] == over["read"].details["images_kept_mapped"]
    kept = floors(model, split, spec, StreamPlan(16, False, 1, release_bytes=1 << 40), repeat=1)
    assert not {"read_remapped", "read_pread"} & set(kept) and "images_kept_mapped" not in kept["read"].details
