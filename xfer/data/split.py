"""The target data as training sees it: split, pushed through the C++ kernel once, normalised.

Splits follow the study's protocol (``random``: stratified 80/20) or leave one
character out; a validation part can be carved from the training split so
hyperparameters are never chosen on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.config import DEFAULT_PACK, DEFAULT_PER_CLASS, DEFAULT_SYNTH
from xfer.data import ferg, formats
from xfer.data.formats import load_dataset, pack_folder
from xfer.data.pack import is_pack
from xfer.data.synth import generate
from xfer.errors import XferError
from xfer.preprocess import preprocess
from xfer.progress import say

KERNEL_CHUNK = 1024  # images the kernel preprocesses per call while a split is prepared (packs are memory-mapped)


@dataclass
class Split:
    x_train: np.ndarray  # float32 (N, C, H, W), normalised
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray  # positions of the test images in the data set
    classes: list[str]
    mean: list[float]
    std: list[float]
    train_index: np.ndarray | None = None
    votes: np.ndarray | None = None  # (N, C) annotator votes of the whole data set, when present
    landmarks: np.ndarray | None = None  # (N, K, 2) in [0, 1] of the image size, when present
    x_val: np.ndarray | None = None  # a validation part carved from the training split (``--val``)
    y_val: np.ndarray | None = None
    val_index: np.ndarray | None = None
    layout: str = "folders"  # a name in xfer.data.formats.LAYOUTS (what the classes are)

    @property
    def class_word(self) -> str:
        """What a class is called in tables: an emotion in FERG-DB, a class anywhere else."""
        return class_word(self.layout)


def class_word(name: str) -> str:
    return formats.layout(name).class_word


def default_data(progress: bool = True, per_class: int = DEFAULT_PER_CLASS, seed: int = 0) -> Path:
    """The embedded default target: a synthetic FERG-DB, rendered and packed on first use."""
    if is_pack(DEFAULT_PACK):
        return Path(DEFAULT_PACK)
    if not Path(DEFAULT_SYNTH).is_dir():
        say(f"rendering the default synthetic FERG-DB into {DEFAULT_SYNTH} (once)")
        generate(DEFAULT_SYNTH, per_class=per_class, seed=seed, progress=progress)
    return pack_folder(DEFAULT_SYNTH, DEFAULT_PACK, progress=progress)


def tensors(images: np.ndarray, size: tuple[int, int], channels: int, chunk: int = KERNEL_CHUNK) -> np.ndarray:
    """All images through the C++ kernel into [0, 1] floats, chunk by chunk (packs are memory-mapped)."""
    out = np.empty((len(images), channels, *size), np.float32)
    for i in range(0, len(images), chunk):
        preprocess(np.ascontiguousarray(images[i:i + chunk]), size, channels, out=out[i:i + chunk])
    return out


def load_split(data: str | None, split: str, size: tuple[int, int], channels: int, seed: int,
               progress: bool = True, val: float = 0.0) -> Split:
    """Load, split and normalise the target data with the training split's own mean and std.

    Matching the source's input statistics (zero mean, unit variance, as MNIST
    normalisation gives the digits) is what lets transferred filters see
    familiar inputs. ``val`` > 0 carves a stratified validation part out of the
    training split: the part hyperparameters are chosen on, so the test split
    is never looked at before the final number.
    """
    if not 0.0 <= val < 1.0:
        raise XferError(f"--val: expected a fraction in [0, 1), got {val}")
    pack = load_dataset(data or default_data(progress), progress=progress)
    if split.startswith("loco:") and not formats.layout(pack.layout).leave_one_out:
        raise XferError(f"--split {split}: leaving one character out needs FERG-DB data "
                        f"(<root>/<character>/<character>_<emotion>/); {data} is a class-per-folder set")
    tr, te = ferg.split(split, pack.labels, pack.groups, pack.group_names, seed)
    va = np.zeros(0, np.int64)
    if val > 0:
        keep, held = ferg.stratified_split(pack.labels[tr], pack.groups[tr], val, seed + 7919)
        if len(held) == 0 or len(keep) == 0:
            raise XferError(f"--val {val}: the training split ({len(tr)} images) is too small to carve a validation part")
        tr, va = tr[keep], tr[held]
    x = tensors(pack.images, size, channels)
    axes = (0, 2, 3)
    mean = x[tr].mean(axis=axes).astype(np.float64)
    std = x[tr].std(axis=axes).astype(np.float64) + 1e-6
    x -= mean.astype(np.float32)[None, :, None, None]
    x /= std.astype(np.float32)[None, :, None, None]
    lm = None
    if pack.landmarks is not None:
        h, w = pack.images.shape[1:3]
        lm = (np.asarray(pack.landmarks, np.float32) / np.array([w, h], np.float32)).astype(np.float32)
    return Split(x[tr], pack.labels[tr], x[te], pack.labels[te], te, list(pack.classes), mean.tolist(), std.tolist(),
                 tr, None if pack.votes is None else np.asarray(pack.votes), lm,
                 x[va] if len(va) else None, pack.labels[va] if len(va) else None, va if len(va) else None,
                 pack.layout)
