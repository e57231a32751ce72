"""Handwritten digits for the source task: real MNIST IDX files, or scikit-learn's bundled scans.

The embedded default needs no download: scikit-learn ships 1,797 real 8x8 scans,
which are upsampled into MNIST's geometry (a 20x20 digit centred in 28x28).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.errors import XferError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class DigitSet:
    """Digits as uint8 images (N, 28, 28) with int64 labels, split for training and testing."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzipped), checking its magic number and payload size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise XferError(f"{path}: no such file") from None
    except OSError as e:
        raise XferError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise XferError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4:
        raise XferError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise XferError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise XferError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        raise XferError(f"{path}: IDX payload is {payload} bytes, header {tuple(dims)} says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise XferError(f"{directory}: missing MNIST file {stem}[.gz]")


def load_mnist(directory: str | os.PathLike[str]) -> DigitSet:
    """Load the four MNIST IDX files from ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise XferError(f"{d}: MNIST directory does not exist")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(_find(d, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_find(d, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or x.dtype != np.uint8:
            raise XferError(f"{d}: {prefix} images must be uint8 (N, rows, cols), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise XferError(f"{d}: {prefix} has {len(x)} images but labels of shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise XferError(f"{d}: {prefix} labels must be digits 0-9, got {int(y.min())}..{int(y.max())}")
        parts[split] = (x, y.astype(np.int64))
    return DigitSet(*parts["train"], *parts["test"], source=f"mnist:{d}")


def _upsample(images: np.ndarray) -> np.ndarray:
    """8x8 scans (0..16) -> MNIST geometry: 20x20 bilinear digit centred in 28x28, uint8."""
    from PIL import Image

    out = np.zeros((len(images), 28, 28), np.uint8)
    for i, im in enumerate(images):
        small = Image.fromarray((im * (255.0 / 16.0)).round().astype(np.uint8))
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return out


def load_embedded_digits(seed: int = 0, test_fraction: float = 0.2) -> DigitSet:
    """scikit-learn's 1,797 bundled digit scans in MNIST geometry, split per class with ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = _upsample(d.images)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitSet(x_tr, y_tr, x_te, y_te, source="sklearn-digits")


def load_digits(mnist_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> DigitSet:
    """Real MNIST when a directory is given, the embedded scans otherwise."""
    return load_mnist(mnist_dir) if mnist_dir else load_embedded_digits(seed)
