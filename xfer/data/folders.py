"""Class-per-folder image sets (``<root>/<class>/*.png|jpg``) and the image decoder every loader shares."""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xfer.errors import XferError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
MAX_PIXELS = 64_000_000  # far above any face image, far below a decompression bomb


@dataclass
class ImageIndex:
    """A scanned (not decoded) image set: one path, label and group per image."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    group_names: list[str] = field(default_factory=list)
    layout: str = "folders"

    def __len__(self) -> int:
        return len(self.paths)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file into uint8 RGB (H, W, 3).

    Gray, palette, 16-bit and alpha images all load: alpha is composited over
    white, 16-bit samples keep their high byte.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise XferError(f"{path}: no such file") from None
    except OSError as e:  # a symlink loop, a path through a file
        raise XferError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise XferError(f"{path}: not a regular file (a device, FIFO or folder named like an image)")
    if st.st_size == 0:
        raise XferError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise XferError(f"{path}: image is {w}x{h} pixels, above the {MAX_PIXELS:,}-pixel limit")
                im.load()
                return _to_rgb(im)
    except XferError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise XferError(f"{path}: image is too large to decode safely (decompression bomb)") from None
    except PermissionError:
        raise XferError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise XferError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise XferError(f"{path}: corrupt or truncated image ({e})") from None


def _to_rgb(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.uint32)
        top = 65535 if im.mode.startswith("I;16") or a.max() > 255 else 255
        gray = (a * 255 // max(top, 1)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def list_images(folder: Path) -> list[Path]:
    """Image files of one class folder; any other visible file is an error (it is probably a mistake)."""
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            raise XferError(f"{p}: unexpected folder inside class folder {folder.name}")
        if p.suffix.lower() == ".pts" and any(p.with_suffix(e).is_file() for e in IMAGE_EXTENSIONS):
            continue  # an image's iBUG/300-W landmarks, read by the pack
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise XferError(f"{p}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
        files.append(p)
    if not files:
        raise XferError(f"{folder}: class folder has no images")
    return files


def check_root(root: str | os.PathLike[str]) -> Path:
    root = Path(root)
    if not root.exists():
        raise XferError(f"{root}: data directory does not exist")
    if not root.is_dir():
        raise XferError(f"{root}: not a directory")
    return root


def subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folders(root: str | os.PathLike[str]) -> ImageIndex:
    """Scan ``<root>/<class>/<image>``: classes are the sorted folder names."""
    root = check_root(root)
    classes = subfolders(root)
    if not classes:
        raise XferError(f"{root}: no class folders found (expected <root>/<class>/*.png)")
    paths, labels = [], []
    for k, folder in enumerate(classes):
        files = list_images(folder)
        paths += files
        labels += [k] * len(files)
    return ImageIndex(root, paths, np.asarray(labels, np.int64), [c.name for c in classes],
                      np.zeros(len(paths), np.int64), ["all"], "folders")
