"""The C++ kernel against its numpy specification, OpenCV, and hostile arguments."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfer import _C
from xfer.preprocess import preprocess, preprocess_reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interp", ["area", "bilinear"])
@pytest.mark.parametrize("c_in", [1, 3, 4])
@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("shape", [(256, 256, 32, 32), (17, 23, 5, 9), (5, 7, 11, 13), (40, 30, 40, 30)])
def test_matches_reference(device, interp, c_in, c_out, shape):
    H, W, h, w = shape
    x = np.random.default_rng(H * W + c_in).integers(0, 256, (3, H, W, c_in), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6][:c_out], [0.2, 0.25, 0.3][:c_out]
    got = preprocess(x, (h, w), c_out, mean, std, interp, device=device)
    ref = preprocess_reference(x, (h, w), c_out, mean, std, interp)
    assert got.shape == (3, c_out, h, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), H=st.integers(1, 40), W=st.integers(1, 40), h=st.integers(1, 24), w=st.integers(1, 24),
       c_in=st.sampled_from([1, 3, 4]), c_out=st.sampled_from([1, 3]), interp=st.sampled_from(["area", "bilinear"]),
       threads=st.integers(0, 3), as_list=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fuzz_against_reference(n, H, W, h, w, c_in, c_out, interp, threads, as_list, seed):
    rng = np.random.default_rng(seed)
    if as_list:
        x = [rng.integers(0, 256, (rng.integers(1, H + 1), rng.integers(1, W + 1), c_in), dtype=np.uint8) for _ in range(n)]
        if c_in == 1 and rng.random() < 0.5:
            x = [np.ascontiguousarray(a[:, :, 0]) for a in x]
    else:
        x = rng.integers(0, 256, (n, H, W, c_in), dtype=np.uint8)
    got = preprocess(x, (h, w), c_out, 0.5, 0.25, interp, threads=threads)
    np.testing.assert_allclose(got, preprocess_reference(x, (h, w), c_out, 0.5, 0.25, interp), atol=1e-5, rtol=0)


def test_area_agrees_with_opencv():
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(0).integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    got = preprocess(x, (32, 32), 3)
    # INTER_AREA on uint8 rounds to integers: within half a grey level of the exact box average.
    ref = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA).transpose(2, 0, 1) for im in x]) / 255.0
    assert np.abs(got - ref).max() <= 0.5 / 255 + 1e-6
    # On float input OpenCV computes the same exact box average.
    ref_f = np.stack([cv2.resize(im.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                      for im in x]) / 255.0
    np.testing.assert_allclose(got, ref_f, atol=1e-5)


def test_bilinear_agrees_with_opencv_float():
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(1).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    got = preprocess(x, (20, 70), 3, interp="bilinear")
    ref = np.stack([cv2.resize(im.astype(np.float32), (70, 20), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
                    for im in x]) / 255.0
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_out_buffer_is_filled_in_place():
    x = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    out = np.full((5, 1, 16, 16), np.nan, np.float32)
    res = preprocess(x, 16, 1, out=out)
    assert res is out or np.shares_memory(res, out)
    np.testing.assert_allclose(out, preprocess_reference(x, 16, 1), atol=1e-5)


def test_gray_weights_and_normalisation():
    x = np.zeros((1, 2, 2, 3), np.uint8)
    x[..., 0] = 255
    got = preprocess(x, 2, 1, mean=0.1, std=0.5)
    np.testing.assert_allclose(got, (0.299 - 0.1) / 0.5, atol=1e-6)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: preprocess(np.zeros((2, 8, 8, 3), np.float32), 4), TypeError, "expected dtype uint8, got float32"),
    (lambda: preprocess(np.zeros((8, 8, 3), np.uint8), 4), ValueError, "expected a 4-D batch"),
    (lambda: preprocess(np.zeros((2, 8, 8, 2), np.uint8), 4), ValueError, "expected 1, 3 or 4 channels.*got 2"),
    (lambda: preprocess(np.zeros((2, 8, 8, 5), np.uint8), 4), ValueError, "got 5"),
    (lambda: preprocess(np.zeros((2, 8, 16, 3), np.uint8)[:, :, ::2], 4), ValueError, "C-contiguous"),
    (lambda: preprocess(np.zeros((2, 8, 8, 3), np.uint8)[::-1], 4), ValueError, "C-contiguous"),
    (lambda: preprocess(np.zeros((0, 8, 8, 3), np.uint8), 4), ValueError, "empty batch"),
    (lambda: preprocess(np.zeros((2, 0, 8, 3), np.uint8), 4), ValueError, "non-empty"),
    (lambda: preprocess([], 4), ValueError, "empty list"),
    (lambda: preprocess([np.zeros((4, 4, 3), np.uint8), "x"], 4), TypeError, r"images\[1\]: expected a numpy array"),
    (lambda: preprocess("images", 4), TypeError, "got str"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), (0, 4)), ValueError, "size"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, channels=2), ValueError, "channels"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, std=0.0), ValueError, "std"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, channels=3, mean=[0.1, 0.2]), ValueError, "mean"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, interp="cubic"), ValueError, "interp"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, out=np.zeros((1, 1, 4, 5), np.float32)), ValueError,
     r"out: expected shape \(1, 1, 4, 4\), got \(1, 1, 4, 5\)"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, out=np.zeros((1, 1, 4, 4), np.float64)), TypeError, "float32"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, out=np.zeros((1, 1, 4, 8), np.float32)[..., ::2]), ValueError,
     "C-contiguous"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, device="tpu"), ValueError, "device"),
    (lambda: preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, threads=-1), ValueError, "threads"),
])
def test_hostile_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_output_rejected():
    out = np.zeros((1, 1, 4, 4), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        preprocess(np.zeros((1, 8, 8, 3), np.uint8), 4, out=out)


def _nvcc_found() -> bool:
    import os
    import shutil

    if os.environ.get("XFER_CUDA", "AUTO").upper() == "OFF":
        return False
    return bool(os.environ.get("CUDACXX") or shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))


def test_cuda_reports_build():
    """The CUDA kernels are built exactly when CMake can find a CUDA compiler, and say so."""
    if os.environ.get("XFER_C_LIBRARY"):
        pytest.skip("a separately built kernel (the AddressSanitizer build) is loaded")
    assert _C.cuda_available() is _nvcc_found()
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    if not _C.cuda_available():
        with pytest.raises(RuntimeError, match="no CUDA kernels"):
            preprocess(x, 4, device="cuda")
    elif _C.cuda_device_count() == 0:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            preprocess(x, 4, device="cuda")
    else:
        np.testing.assert_allclose(preprocess(x, 4, device="cuda"), preprocess(x, 4), atol=1e-5)


def test_worker_exception_reaches_python_with_threads_joined():
    assert _C._check_worker_failure(1000, 4, 10**9) == 1000
    for threads in (1, 2, 8):
        with pytest.raises(MemoryError):
            _C._check_worker_failure(1000, threads, 500)


def _cpu_quota() -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (rounded up), or None when there is none."""
    import math

    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def test_threads_default_to_the_cpus_this_process_may_use():
    expected = len(os.sched_getaffinity(0))
    quota = _cpu_quota()
    assert _C.get_num_threads() == (min(expected, quota) if quota else expected)
    import subprocess
    import sys

    code = "from xfer.preprocess import _C; print(_C.get_num_threads())"
    r = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if r.returncode == 0:
        assert r.stdout.strip() == "1"


def test_threads_calls_on_lists_that_other_threads_mutate():
    """The kernel holds the list's arrays for the whole call: emptying the list meanwhile frees nothing it reads."""
    import gc
    import threading

    base = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    want = preprocess(base[None], (16, 16), 1)[0]
    shared = [base.copy() for _ in range(12)]
    stop = threading.Event()
    errors: list[str] = []

    def mutate():  # each replaced array is freed at once (and, at 360 kB, unmapped by the allocator)
        while not stop.is_set():
            for i in range(len(shared)):
                shared[i] = base.copy()
            gc.collect()

    def run():
        for _ in range(30):
            got = preprocess(shared, (16, 16), 1, threads=2)
            if not all(np.array_equal(g, want) for g in got):
                errors.append("an output differs from the image's reference: freed pixels were read")

    mutators = [threading.Thread(target=mutate) for _ in range(2)]
    workers = [threading.Thread(target=run) for _ in range(3)]
    for t in mutators + workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in mutators:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.needs_cuda
def test_preprocess_to_device_checks_pointer_and_size():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    x = np.random.default_rng(0).integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    buf = torch.empty((5, 1, 8, 8), dtype=torch.float32, device="cuda")
    _C.preprocess_to_device(x, buf.data_ptr(), buf.numel() * 4, (8, 8), 1, [0.5], [0.25], "area")
    np.testing.assert_allclose(buf.cpu().numpy(), preprocess(x, 8, 1, 0.5, 0.25), atol=1e-5)
    with pytest.raises(ValueError, match="out_bytes"):
        _C.preprocess_to_device(x, buf.data_ptr(), buf.numel() * 4 - 4, (8, 8), 1, [0.5], [0.25], "area")
    host = np.zeros((5, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="device memory"):
        _C.preprocess_to_device(x, host.ctypes.data, host.nbytes, (8, 8), 1, [0.5], [0.25], "area")


@pytest.mark.needs_cuda
def test_cuda_chunks_and_mixed_sizes_match_reference():
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (300, 256, 256, 3), dtype=np.uint8)  # 59 MB: more than one 32 MB upload chunk
    np.testing.assert_allclose(preprocess(big, 32, 1, device="cuda"), preprocess(big, 32, 1), atol=1e-4)
    mixed = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (20, 30), (41, 17), (8, 8)]]
    np.testing.assert_allclose(preprocess(mixed, 8, 3, device="cuda"), preprocess(mixed, 8, 3), atol=1e-4)


def test_threads_agree():
    x = np.random.default_rng(0).integers(0, 256, (7, 50, 60, 3), dtype=np.uint8)
    a = preprocess(x, (9, 11), 3, threads=1)
    for t in (2, 3, 8):
        np.testing.assert_array_equal(preprocess(x, (9, 11), 3, threads=t), a)
    big = np.random.default_rng(1).integers(0, 256, (1, 300, 200, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(big, 64, 1, threads=1), preprocess(big, 64, 1, threads=4))


def test_gray_weights_agree_between_cpp_and_python():
    from xfer.preprocess import GRAY_WEIGHTS

    np.testing.assert_allclose(_C.gray_weights(), GRAY_WEIGHTS, rtol=0, atol=1e-7)
    assert sum(GRAY_WEIGHTS) == pytest.approx(1.0)


@pytest.mark.parametrize("shape,size,channels", [((3, 256, 256, 3), 32, 1), ((3, 240, 240, 3), 80, 3),
                                                 ((3, 64, 48, 4), (16, 12), 1), ((3, 64, 64, 1), 8, 3),
                                                 ((2, 255, 255, 3), 5, 1), ((2, 96, 64, 3), (6, 4), 3)],
                         ids=["8x-gray", "3x-rgb", "4x-rgba", "8x-from-gray", "51x-float-path", "16x-max-u16"])
def test_whole_factor_area_matches_the_spec(shape, size, channels):
    """Whole factors take the integer path (sums of bytes in u16): the same values as the spec."""
    x = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    x[0] = 255  # the largest sums: 16x16 = 256 bytes of 255 must not overflow u16
    np.testing.assert_allclose(preprocess(x, size, channels, 0.5, 0.25), preprocess_reference(x, size, channels, 0.5, 0.25),
                               atol=1e-5, rtol=0)


@pytest.fixture
def restore_target():
    from xfer.preprocess import kernel_targets, set_kernel_target

    yield
    set_kernel_target(kernel_targets()[0])


@pytest.mark.parametrize("interp", ["area", "bilinear"])
@pytest.mark.parametrize("shape,size,channels", [((3, 256, 256, 3), 32, 1), ((2, 240, 200, 3), (37, 29), 3),
                                                 ((2, 65, 67, 1), 13, 1)], ids=["box-gray", "float-rgb", "odd-gray"])
def test_every_dispatch_target_matches_the_spec(restore_target, interp, shape, size, channels):
    """Each target the loops were built for that this CPU runs (avx512, avx2, baseline) against the numpy spec."""
    from xfer.preprocess import kernel_target, kernel_targets, set_kernel_target

    x = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    want = preprocess_reference(x, size, channels, 0.4, 0.3, interp)
    targets = kernel_targets()
    assert targets[-1] == "baseline" and set(targets) <= set(_C.kernel_targets(False))
    for t in targets:
        set_kernel_target(t)
        assert kernel_target() == t
        np.testing.assert_allclose(preprocess(x, size, channels, 0.4, 0.3, interp), want, atol=1e-5, rtol=0, err_msg=t)


@pytest.mark.parametrize("c", [1, 3, 4])
@pytest.mark.parametrize("shape,size", [((2, 256, 256), 32), ((2, 24, 40), (3, 5)), ((3, 8, 56), (1, 7)),
                                        ((1, 256, 8), (8, 1))], ids=["ferg", "odd-width", "one-row", "one-column"])
def test_box_by_eight_is_the_same_on_every_target(restore_target, shape, size, c):
    """Resampling by 8 along the row has its own loop where the CPU has VBMI (a byte permute and a sum of absolute
    differences); its sums are exact, so every target gives the same floats, and the spec's to rounding, at
    widths whose last load is cut short and for gray, RGB and RGBA."""
    from xfer.preprocess import kernel_targets, set_kernel_target

    x = np.random.default_rng(c).integers(0, 256, (*shape, c), dtype=np.uint8)
    x[0, :, -1] = 255  # the last column's pixels: a masked load that dropped them would show
    channels = 1 if c == 1 else 3
    want = preprocess_reference(x, size, channels, 0.4, 0.3, "area")
    got = {}
    for t in kernel_targets():
        set_kernel_target(t)
        got[t] = preprocess(x, size, channels, 0.4, 0.3, "area")
        np.testing.assert_allclose(got[t], want, atol=1e-5, rtol=0, err_msg=t)
    for t, y in got.items():
        assert np.array_equal(y, got["baseline"]), t


@pytest.mark.skipif(not hasattr(os, "pread"), reason="needs POSIX pread")
def test_preprocess_file_reads_what_the_mapping_holds(restore_target, tmp_path):
    """preprocess_file (pread into per-thread buffers) gives exactly what preprocess gives on the mapped array, on
    every target, whole factors and taps; bad files and arguments are one line naming the offset or argument."""
    from xfer.preprocess import kernel_targets, preprocess_file, read_floor_file, set_kernel_target

    rng = np.random.default_rng(8)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (9, 64, 40, 3), np.uint8))
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    index = np.array([8, 0, 3, 3, 5], np.int64)
    fd = os.open(tmp_path / "images.npy", os.O_RDONLY)
    try:
        for t in kernel_targets():
            set_kernel_target(t)
            for size in ((8, 5), (13, 7)):
                want = preprocess(images, size, 1, 0.4, 0.3, index=index)
                for threads in (1, 3):
                    got = preprocess_file(fd, images.offset, images.shape, index, size, 1, 0.4, 0.3, threads=threads)
                    assert np.array_equal(got, want), (t, size, threads)
        read_floor_file(fd, images.offset, images.shape, index)
        with pytest.raises(RuntimeError, match=r"images file: ends before byte \d+ \(read \d+ of 7680 bytes"):
            preprocess_file(fd, images.offset, (12, 64, 40, 3), np.array([11], np.int64), 8, 1, 0.4, 0.3)
        with pytest.raises(ValueError, match=r"out: expected shape \(5, 1, 8, 5\), got \(5, 1, 8, 4\)"):
            preprocess_file(fd, images.offset, images.shape, index, (8, 5), 1, 0.4, 0.3,
                            out=np.zeros((5, 1, 8, 4), np.float32))
        with pytest.raises(ValueError, match=r"index\[0\]: 9 is out of range for a batch of 9 images"):
            read_floor_file(fd, images.offset, images.shape, np.array([9], np.int64))
    finally:
        os.close(fd)


def test_dispatch_target_is_pinned_by_the_environment(tmp_path):
    """XFER_ISA pins the kernel's dispatch (and what xfer.hw reports); a bad value is one line, not a traceback."""
    import subprocess
    import sys

    code = ("from xfer.preprocess import kernel_target; from xfer.hw import hardware; "
            "print(kernel_target(), 'avx512f' in hardware().flags, hardware().pinned)")
    env = dict(os.environ, XFER_ISA="baseline")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["baseline", "False", "baseline"]
    env["XFER_ISA"] = "neon"
    bad = subprocess.run([sys.executable, "-m", "xfer", "inspect", str(tmp_path / "none.onnx")], env=env,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "XFER_ISA=neon" in bad.stderr and "expected one of" in bad.stderr


def test_an_unknown_or_unsupported_target_is_refused(restore_target):
    from xfer.errors import XferError
    from xfer.preprocess import set_kernel_target

    with pytest.raises(XferError, match="unknown kernel target 'sve'.*avx512, avx2, baseline"):
        set_kernel_target("sve")
    missing = [t for t in _C.kernel_targets(False) if t not in _C.kernel_targets()]
    for t in missing:
        with pytest.raises(XferError, match="not supported by this CPU"):
            set_kernel_target(t)
