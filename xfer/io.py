"""Atomic writes: a kill at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xfer.errors import XferError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary keeps ``path``'s suffix (or ``suffix``) so writers that look at
    extensions (numpy, ONNX, MXNet) behave as they would on the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (suffix if suffix is not None else path.suffix),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically write ``path`` with ``writer(tmp_path)`` (for libraries that want a filename)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


MARKER = ".xfer-written"  # in every folder xfer writes whole: the proof that replacing it loses nothing of the user's


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def check_out_folder(path: Path, force: bool = False) -> bool:
    """May xfer replace folder ``path`` whole? True if it is absent, empty or xfer's own (its marker); False when
    it is the user's and ``force`` lets xfer replace only its own entries; ``XferError`` otherwise."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise XferError(f"{path}: exists and is not a folder; pick another --out")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise XferError(f"{path}: {parent} is a file, not a folder")
    if not path.is_dir() or (path / MARKER).is_file() or not any(path.iterdir()):
        return True
    if force:
        return False
    raise XferError(f"{path}: folder exists and xfer did not write it; pick another --out, or pass --force to "
                    "replace only the entries xfer writes there (everything else stays)")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    ``path`` is replaced whole only when xfer wrote it (or it is absent or empty): a folder of the user's is
    refused, or with ``force`` keeps everything but the entries xfer writes. The new folder carries the marker.
    """
    path = Path(path)
    whole = check_out_folder(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        (tmp / MARKER).write_text("written by xfer: `xfer` may replace this folder whole\n")
        if whole:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old.{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            for entry in sorted(tmp.iterdir()):
                if entry.name == MARKER:
                    continue  # the folder stays the user's: xfer may not replace it whole next time either
                target = path / entry.name
                if target.exists() or target.is_symlink():
                    _remove(target)
                os.replace(entry, target)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_apart(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """``XferError`` when writing ``out`` could touch ``src``: the same folder, or one inside the other."""
    a, b = Path(src).resolve(), Path(out).resolve()
    if a == b or a in b.parents or b in a.parents:
        raise XferError(f"--out {out}: overlaps the input {src}; write the output beside it, not over it")
