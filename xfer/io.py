"""Atomic writes: a kill at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from xfer.errors import XferError

FULL = 1 << 20  # a filesystem with less free than this after a failed write is a full one


def is_disk_full(e: BaseException, where: Path | None = None) -> bool:
    """ENOSPC/EDQUOT, torch's and numpy's own words for a write the disk refused ("unexpected pos", "N requested
    and M written"), or any write error on a filesystem ``where`` that is now (nearly) full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    if "No space left" in text or "unexpected pos" in text or "file write failed" in text:
        return True
    if where is not None and isinstance(e, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(where).free < FULL
    return False


def _mount_of(path: Path) -> Path:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    dev = p.stat().st_dev
    while p.parent != p and p.parent.stat().st_dev == dev:
        p = p.parent
    return p


def disk_full(path: Path) -> XferError:
    """The one line a full disk gets; the file that was there before is untouched (only a temporary was written)."""
    return XferError(f"no space left on {_mount_of(path.parent)} while writing {path} (the previous file, if any, "
                     "is intact)")


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
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as e:
            if is_disk_full(e, path.parent):
                raise disk_full(path) from None
            raise
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
        try:
            yield tmp
            (tmp / MARKER).write_text("written by xfer: `xfer` may replace this folder whole\n")
        except (OSError, RuntimeError) as e:
            if is_disk_full(e, path.parent):
                raise disk_full(path) from None
            raise
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


@contextlib.contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold ``lock`` (an flock the kernel drops when the holder dies, so a stale lock is simply taken over);
    ``XferError`` naming the holder's pid when another live process has it."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise XferError(f"{what}: another xfer process (pid {holder}) is writing it; wait for it or pick "
                            "another --out/--name") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_temps(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporaries ``atomic_path`` left beside ``names`` when a writer was killed (call under the lock)."""
    gone = []
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp*"):
            with contextlib.suppress(OSError):
                _remove(tmp)
                gone.append(tmp)
    return gone


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
