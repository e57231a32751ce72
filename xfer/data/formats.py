"""The data formats xfer reads as target data, as records: a new format is one ``DataFormat`` in ``FORMATS``.

``load_dataset`` asks each format in turn whether a path is one of its own;
the first that says yes loads it into a ``Pack``. ``LAYOUTS`` says what a
format's classes and groups are called, and whether a group can be held out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.config import parse_input_size
from xfer.data.digits import load_mnist
from xfer.data.ferg import looks_like_ferg, scan_ferg
from xfer.data.folders import ImageIndex, check_root, scan_folders
from xfer.data.pack import Pack, decode_index, is_pack, load_pack, pack_index
from xfer.errors import XferError
from xfer.io import check_apart

Size = tuple[int, int] | None


@dataclass(frozen=True)
class Layout:
    """What a data set's labels are: the word a table uses for a class, and whether groups can be held out."""

    name: str
    class_word: str
    group_word: str | None = None

    @property
    def leave_one_out(self) -> bool:
        return self.group_word is not None


LAYOUTS = {layout.name: layout for layout in (
    Layout("ferg", "emotion", "character"), Layout("folders", "class"), Layout("idx", "digit"))}


def layout(name: str) -> Layout:
    return LAYOUTS.get(name, LAYOUTS["folders"])


@dataclass(frozen=True)
class DataFormat:
    """One format: its name, how to recognise a path as one, how to load it."""

    name: str
    what: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, Size, bool], Pack]


def _idx_files(path: Path) -> bool:
    return path.is_dir() and any(p.name.startswith(("train-images", "train-images.idx")) for p in path.iterdir())


def _load_idx(path: Path, _size: Size, _progress: bool) -> Pack:
    """An MNIST-style IDX folder as a target set: both of its parts, digits 0-9 as the classes (xfer splits it)."""
    d = load_mnist(path)
    images = np.concatenate([d.x_train, d.x_test])[..., None]
    labels = np.concatenate([d.y_train, d.y_test]).astype(np.int64)
    return Pack(np.ascontiguousarray(images), labels, np.zeros(len(labels), np.int64), [str(i) for i in range(10)],
                ["all"], source=d.source, layout="idx")


FORMATS: list[DataFormat] = [
    DataFormat("pack", "a pack folder (`xfer data pack`)", is_pack, lambda p, _size, _progress: load_pack(p)),
    DataFormat("idx", "an MNIST-style IDX folder", _idx_files, _load_idx),
    DataFormat("ferg", "a FERG-DB tree (<character>/<character>_<emotion>/*.png)", looks_like_ferg,
               lambda p, size, progress: decode_index(scan_ferg(p), size, progress=progress)),
    DataFormat("folders", "a class-per-folder tree (<class>/*.png)", lambda p: p.is_dir(),
               lambda p, size, progress: decode_index(scan_folders(p), size, progress=progress)),
]


TREES = ("ferg", "folders")  # the formats that are image trees (what `xfer data pack` decodes)


def scan(root: str | os.PathLike[str]) -> ImageIndex:
    """Index an image tree (FERG-DB layout or class-per-folder) without decoding it."""
    p = check_root(root)
    return scan_ferg(p) if looks_like_ferg(p) else scan_folders(p)


def pack_folder(root: str | os.PathLike[str], out: str | os.PathLike[str], size: Size = None,
                progress: bool = True, force: bool = False) -> Path:
    """Decode an image tree once into a pack folder (memory-mappable arrays)."""
    check_apart(root, out)
    if size is not None:
        parse_input_size(size, "--size")
    return pack_index(scan(root), out, size, progress, force)


def detect(path: str | os.PathLike[str]) -> DataFormat:
    """The first format that recognises ``path``; ``XferError`` listing them when none does."""
    p = Path(path)
    if not is_pack(p):
        p = check_root(p)
    for f in FORMATS:
        if f.detect(p):
            return f
    raise XferError(f"{path}: not a data set xfer reads (expected {'; '.join(f.what for f in FORMATS)})")


def load_dataset(path: str | os.PathLike[str], size: Size = None, progress: bool = True) -> Pack:
    """A pack as is (memory-mapped), or any other format decoded on the fly."""
    return detect(path).load(Path(path), size, progress)
