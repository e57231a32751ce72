"""The Python face of the C++ kernel: uint8 HWC images -> the float32 NCHW tensor a network takes.

``preprocess`` resizes (area averaging or bilinear), converts colour (BT.601
gray or RGB) and normalises in one multi-threaded pass with the GIL released;
``preprocess_reference`` is the same maths in plain numpy, kept as the
specification the kernel is tested against.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

import numpy as np

from xfer.config import ISA_VAR
from xfer.errors import XferError


def _load_extension():
    """``xfer._C``, or the build named by ``XFER_C_LIBRARY`` (a sanitizer build, say) in its place."""
    path = os.environ.get("XFER_C_LIBRARY")
    if path:
        spec = importlib.util.spec_from_file_location("xfer._C", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"XFER_C_LIBRARY={path}: not a loadable extension module")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["xfer._C"] = mod
        return mod
    from xfer import _C as mod

    return mod


_C = _load_extension()

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _floats(v: float | Sequence[float]) -> list[float]:
    if isinstance(v, (Sequence, np.ndarray)):
        return [float(x) for x in v]
    return [float(v)]


def preprocess(images, size: int | Sequence[int] = (32, 32), channels: int = 1,
               mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
               interp: str = "area", out: np.ndarray | None = None, device: str = "cpu",
               threads: int = 0, index: np.ndarray | None = None) -> np.ndarray:
    """Resize, colour-convert and normalise ``images`` into float32 (N, channels, h, w).

    ``images`` is a C-contiguous uint8 batch (N, H, W, C) or a list of (H, W[, C])
    arrays of any sizes, C in {1, 3, 4} (alpha is ignored). Output values are
    ``(pixel / 255 - mean) / std``. ``out`` receives the result without a copy.
    ``index`` (int64) takes images of a 4-D batch by position, in its order, without
    gathering them first: a chunk of a memory-mapped pack streams straight in.
    ``device`` is "cpu", "cuda" or "cuda:N"; ``threads`` (CPU) 0 uses the CPUs this
    process may run on (its affinity mask and CPU quota, not the machine's core count).
    Bad arguments raise ``TypeError``/``ValueError`` saying what was expected.
    """
    kind, _, ordinal = device.partition(":")
    if kind == "cuda" and ordinal and not ordinal.isdigit():
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got '{device}'")
    _pin_target()
    return _C.preprocess(images, _size(size), int(channels), _floats(mean), _floats(std), interp, out, kind,
                         _threads(threads), int(ordinal or 0), index)


def cuda_available() -> bool:
    """True when the CUDA kernel was built and a CUDA device is present."""
    return bool(_C.cuda_available() and _C.cuda_device_count() > 0)


def cuda_built() -> bool:
    """True when ``xfer._C`` was compiled with its CUDA kernel (whether or not a device is present now)."""
    return bool(_C.cuda_available())


def preprocess_to_device(images: np.ndarray, out_ptr: int, out_bytes: int, size: tuple[int, int], channels: int,
                         mean: Sequence[float], std: Sequence[float], interp: str = "area") -> None:
    """The CUDA kernel writing into a device buffer someone else owns (ONNX Runtime's IO binding)."""
    _C.preprocess_to_device(images, int(out_ptr), int(out_bytes), _size(size), int(channels), _floats(mean),
                            _floats(std), interp)


MAX_THREADS = 1024  # the kernel's own cap (csrc/preprocess.cpp kMaxThreads): beyond it a count is a mistake


def _threads(n: int, what: str = "threads") -> int:
    """``n`` checked here, where Python's unbounded int is still whole (the C++ side takes an ``int``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= int(n) <= MAX_THREADS:
        raise ValueError(f"{what}: expected 0 (all cores) to {MAX_THREADS}, got {n!r}")
    return int(n)


def read_floor(images: np.ndarray, threads: int = 0, index: np.ndarray | None = None) -> int:
    """Read every byte of ``images`` (or of the rows ``index`` names) once and nothing else: the memory floor.

    Returns a checksum so the reads cannot be optimised away.
    """
    _pin_target()
    return int(_C.read_floor(images, _threads(threads), index))


def preprocess_file(fd: int, offset: int, shape: Sequence[int], index: np.ndarray, size: int | Sequence[int],
                    channels: int, mean: float | Sequence[float], std: float | Sequence[float], interp: str = "area",
                    out: np.ndarray | None = None, threads: int = 0) -> np.ndarray:
    """``preprocess`` on the CPU for images of ``shape`` (N, H, W, C) stored back to back at ``offset`` of the open
    file ``fd``: each image ``index`` picks is read with pread into a per-thread buffer, nothing is mapped (a split
    too big to keep mapped costs more to re-fault than to copy out of the page cache). POSIX only."""
    _pin_target()
    return _C.preprocess_file(fd, int(offset), [int(d) for d in shape], index, _size(size), int(channels),
                              _floats(mean), _floats(std), interp, out, _threads(threads))


def read_floor_file(fd: int, offset: int, shape: Sequence[int], index: np.ndarray, threads: int = 0) -> None:
    """Read the bytes of the images ``index`` picks by pread, as ``preprocess_file`` does, and nothing else."""
    _C.read_floor_file(fd, int(offset), [int(d) for d in shape], index, _threads(threads))


_pinned: list[str] = []  # the XFER_ISA value applied, once per process


def _pin_target() -> None:
    """Apply ``XFER_ISA`` to the kernel's dispatch on first use (a bad value is one line, inside the CLI's care)."""
    isa = os.environ.get(ISA_VAR, "")
    if _pinned and _pinned[0] == isa:
        return
    if isa:
        set_kernel_target(isa)
    _pinned[:] = [isa]


def clock_mhz() -> float:
    """The core clock in MHz, measured by the kernel (chains of dependent adds, one per cycle); 0.0 where it has no
    such chain for this architecture."""
    return float(_C.clock_mhz())


def kernel_targets() -> list[str]:
    """The targets the kernel's loops can dispatch to on this CPU, widest first (``avx512``, ``avx2``, ``baseline``)."""
    return list(_C.kernel_targets())


def kernel_target() -> str:
    """The target the kernel dispatches to now (the widest this CPU runs, or the one ``XFER_ISA`` pins)."""
    _pin_target()
    return str(_C.kernel_target())


def set_kernel_target(name: str) -> None:
    """Pin the kernel's loops to ``name`` for this process (tests run every target against the numpy spec)."""
    try:
        _C.set_kernel_target(name)
    except ValueError as e:
        raise XferError(f"{ISA_VAR}={name}: {e}") from None


def kernel_threads() -> int:
    """The threads the kernel uses when a call passes ``threads=0``."""
    return int(_C.get_num_threads())


def set_kernel_threads(n: int) -> None:
    """Set the kernel's default thread count for this process (0: the CPUs it may run on)."""
    _C.set_num_threads(_threads(n, "set_num_threads"))


def _taps(n_in: int, n_out: int, interp: str) -> np.ndarray:
    """Dense (n_out, n_in) resampling matrix with the kernel's exact weights."""
    m = np.zeros((n_out, n_in))
    s = n_in / n_out
    for o in range(n_out):
        if interp == "area":
            a, b = o * s, min((o + 1) * s, n_in)
            for i in range(int(np.floor(a)), max(int(np.ceil(b)), int(np.floor(a)) + 1)):
                if i < n_in:
                    m[o, i] = max(0.0, min(b, i + 1) - max(a, i)) / (b - a)
        else:
            src = max((o + 0.5) * s - 0.5, 0.0)
            i0 = int(np.floor(src))
            f = src - i0
            if i0 >= n_in - 1:
                i0, f = n_in - 1, 0.0
            m[o, i0] += 1 - f
            if f:
                m[o, i0 + 1] += f
    return m


def preprocess_reference(images, size: int | Sequence[int] = (32, 32), channels: int = 1,
                         mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
                         interp: str = "area") -> np.ndarray:
    """The kernel's specification in float64 numpy: separable resampling, then colour, then normalisation."""
    h, w = _size(size)
    imgs = list(images)
    m = np.broadcast_to(np.asarray(_floats(mean)), (channels,))
    s = np.broadcast_to(np.asarray(_floats(std)), (channels,))
    out = np.empty((len(imgs), channels, h, w), np.float32)
    for n, im in enumerate(imgs):
        a = np.asarray(im, np.float64)
        if a.ndim == 2:
            a = a[:, :, None]
        ry, rx = _taps(a.shape[0], h, interp), _taps(a.shape[1], w, interp)
        r = np.einsum("oh,hwc,pw->opc", ry, a, rx)
        if channels == 1:
            g = r[..., 0] if a.shape[2] == 1 else r[..., :3] @ np.asarray(GRAY_WEIGHTS)
            planes = g[None]
        else:
            planes = np.stack([r[..., 0]] * 3) if a.shape[2] == 1 else np.moveaxis(r[..., :3], 2, 0)
        out[n] = (planes / 255.0 - m[:, None, None]) / s[:, None, None]
    return out
