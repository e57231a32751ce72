"""Decode an image tree once into memory-mappable arrays, so no later stage decodes a PNG again.

A pack is a folder ``<name>.xpack/`` holding ``images.npy`` (uint8 N, H, W, 3),
``labels.npy``, ``groups.npy``, optional ``landmarks.npy`` (N, K, 2) and
``intensity.npy`` and ``votes.npy`` (N, 7 annotator votes), plus ``meta.json`` (class and group names, source, layout).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xfer.data.folders import ImageIndex, load_image
from xfer.data.sidecars import read_landmarks, read_pts_beside, read_votes
from xfer.errors import XferError
from xfer.io import atomic_dir
from xfer.progress import bar

PACK_VERSION = 1


@dataclass
class Pack:
    """A decoded image set; ``images`` is memory-mapped when loaded from disk."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    classes: list[str]
    group_names: list[str]
    landmarks: np.ndarray | None = None
    intensity: np.ndarray | None = None
    votes: np.ndarray | None = None
    source: str = ""
    layout: str = "folders"

    def __len__(self) -> int:
        return len(self.labels)


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    img = load_image(path)
    if size is not None and img.shape[:2] != size:
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BOX))
    return img


MEMORY_BUDGET = 0.5  # share of this machine's memory a data set decoded on the fly may take (a pack has no limit)


def _header_size(path: Path) -> tuple[int, int]:
    """(h, w) from the image's header, nothing decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # the decode that follows names the problem
        return load_image(path).shape[:2]


def _check_fits(index: ImageIndex, shape: tuple[int, ...], dest: Path | None) -> None:
    """Refuse, before anything is allocated, a set whose pixels do not fit where they are going."""
    need = int(np.prod(shape, dtype=np.int64))
    if dest is not None:
        free = shutil.disk_usage(dest.parent).free
        if need > free:
            raise XferError(f"{index.root}: {shape[0]:,} images of {shape[2]}x{shape[1]} need {need / 1e9:.1f} GB, "
                            f"{dest.parent} has {free / 1e9:.1f} GB free (pass --size H W to pack them smaller)")
        return
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > MEMORY_BUDGET * total:
        raise XferError(f"{index.root}: {shape[0]:,} images of {shape[2]}x{shape[1]} need {need / 1e9:.1f} GB in "
                        f"memory ({total / 1e9:.0f} GB here); pack them first (`xfer data pack`), which streams to disk")


def decode_index(index: ImageIndex, size: tuple[int, int] | None = None, workers: int | None = None,
                 progress: bool = True, dest: Path | None = None) -> Pack:
    """Decode every image of ``index`` into one array (PIL releases the GIL while decoding).

    With ``dest`` the array is ``dest`` itself (a ``.npy`` written image by image through a memory map), so
    memory stays bounded whatever the number of images; without it the set must fit half this machine's memory.
    """
    if len(index) == 0:
        raise XferError(f"{index.root}: no images to pack")
    h, w = size if size is not None else _header_size(index.paths[0])
    shape = (len(index), h, w, 3)
    _check_fits(index, shape, dest)
    images = (np.lib.format.open_memmap(dest, mode="w+", dtype=np.uint8, shape=shape) if dest is not None
              else np.empty(shape, np.uint8))

    def work(i: int) -> None:
        img = _decode(index.paths[i], size)
        if img.shape[:2] != (h, w):
            raise XferError(f"{index.paths[i]}: image is {img.shape[1]}x{img.shape[0]}, the first image is {w}x{h}; "
                            f"resize them all (`xfer data pack --size H W`)")
        images[i] = img

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as ex, bar(len(index), "decode", "img",
                                                                        disable=not progress) as pb:
        for _ in ex.map(work, range(len(index))):
            pb.update(1)
    if isinstance(images, np.memmap):
        images.flush()

    landmarks = intensity = votes = None
    rows = _aligned(index, read_landmarks(index.root), "landmarks.csv")
    pts = read_pts_beside(list(index.paths)) if rows is None else None
    if rows is not None or pts is not None:
        points = [r[0] for r in rows] if rows is not None else list(pts or [])
        landmarks = np.stack(points).astype(np.float32)
        intensity = None if rows is None else np.asarray([r[1] for r in rows], np.float32)
        if size is not None:
            h0, w0 = _header_size(index.paths[0])
            landmarks = landmarks * np.array([w / w0, h / h0], np.float32)
    rows = _aligned(index, read_votes(index.root), "votes.csv")
    if rows is not None:
        votes = np.stack(rows).astype(np.int64)
    return Pack(images, index.labels, index.groups, index.classes, index.group_names, landmarks, intensity, votes,
                str(index.root), index.layout)


def _aligned(index: ImageIndex, table: dict | None, name: str) -> list | None:
    """A sidecar table's rows in the index's image order; every image must have one."""
    if table is None:
        return None
    rels = [p.relative_to(index.root).as_posix() for p in index.paths]
    missing = [r for r in rels if r not in table]
    if missing:
        raise XferError(f"{index.root / name}: no row for {missing[0]} ({len(missing)} images missing)")
    return [table[r] for r in rels]


def _write_rest(pack: Pack, tmp: Path) -> None:
    """Every file of a pack but ``images.npy``, into the folder being written."""
    np.save(tmp / "labels.npy", np.asarray(pack.labels, np.int64))
    np.save(tmp / "groups.npy", np.asarray(pack.groups, np.int64))
    if pack.landmarks is not None:
        np.save(tmp / "landmarks.npy", pack.landmarks.astype(np.float32))
    if pack.intensity is not None:
        np.save(tmp / "intensity.npy", pack.intensity.astype(np.float32))
    if pack.votes is not None:
        np.save(tmp / "votes.npy", pack.votes.astype(np.int64))
    meta = {"version": PACK_VERSION, "count": len(pack), "shape": list(pack.images.shape[1:]),
            "classes": pack.classes, "groups": pack.group_names, "source": pack.source, "layout": pack.layout}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def pack_index(index: ImageIndex, out: str | os.PathLike[str], size: tuple[int, int] | None = None,
               progress: bool = True, force: bool = False) -> Path:
    """Decode ``index`` straight into a new pack folder: images go to disk one by one, never all in memory."""
    out = Path(out)
    with atomic_dir(out, force) as tmp:
        pack = decode_index(index, size, progress=progress, dest=tmp / "images.npy")
        _write_rest(pack, tmp)
        del pack  # the memory map closes before the folder is renamed into place
    return out


def _strings(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def is_pack(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "meta.json").is_file() and (Path(path) / "images.npy").is_file()


def load_pack(path: str | os.PathLike[str], mmap: bool = True) -> Pack:
    """Open a pack; images stay on disk (memory-mapped) unless ``mmap`` is False."""
    path = Path(path)
    if not path.is_dir():
        raise XferError(f"{path}: pack folder does not exist")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise XferError(f"{path}: not a pack (no meta.json)") from None
    except json.JSONDecodeError as e:
        raise XferError(f"{path / 'meta.json'}: invalid JSON ({e.msg})") from None
    if not isinstance(meta, dict) or not _strings(meta.get("classes")) or not _strings(meta.get("groups", [])) \
            or not isinstance(meta.get("count"), int):
        raise XferError(f"{path / 'meta.json'}: expected an object with count, classes and groups (lists of names)")
    if meta.get("version") != PACK_VERSION:
        raise XferError(f"{path / 'meta.json'}: pack version {meta.get('version')} is not {PACK_VERSION}")

    def arr(name: str, mode: Literal["r"] | None = None) -> np.ndarray | None:
        p = path / name
        if not p.is_file():
            return None
        try:
            return np.load(p, mmap_mode=mode, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise XferError(f"{p}: unreadable array ({e})") from None

    images = arr("images.npy", "r" if mmap else None)
    labels, groups = arr("labels.npy"), arr("groups.npy")
    if images is None or labels is None or groups is None:
        raise XferError(f"{path}: incomplete pack (needs images.npy, labels.npy, groups.npy)")
    n = meta.get("count")
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != n or len(labels) != n or len(groups) != n:
        raise XferError(f"{path}: arrays disagree with meta.json (count {n}, images {images.dtype}{images.shape}, "
                        f"labels {labels.shape}, groups {groups.shape})")
    if images.shape[3] != 3 or not images.flags.c_contiguous:
        raise XferError(f"{path / 'images.npy'}: expected C-ordered (N, H, W, 3) RGB images, got shape "
                        f"{images.shape}{'' if images.flags.c_contiguous else ' in Fortran order'}")
    for name, a in (("labels", labels), ("groups", groups)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise XferError(f"{path / (name + '.npy')}: expected one integer per image, got {a.dtype}{a.shape}")
    if n and (labels.min() < 0 or labels.max() >= len(meta["classes"])):
        raise XferError(f"{path}: labels outside 0..{len(meta['classes']) - 1}")
    group_names = list(meta.get("groups", []))
    if n and (groups.min() < 0 or groups.max() >= max(len(group_names), 1)):
        raise XferError(f"{path}: groups outside 0..{max(len(group_names), 1) - 1}")
    sidecars = {name: arr(f"{name}.npy") for name in ("landmarks", "intensity", "votes")}
    for name, side in sidecars.items():
        if side is not None and len(side) != n:
            raise XferError(f"{path / (name + '.npy')}: {len(side)} rows for {n} images")
    return Pack(images, labels, groups, list(meta["classes"]), group_names, sidecars["landmarks"],
                sidecars["intensity"], sidecars["votes"], meta.get("source", ""), meta.get("layout", "folders"))
