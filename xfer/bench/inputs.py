"""What the timed pass reads: the model's own test split inside the (memory-mapped) pack, as indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xfer.data import ferg
from xfer.data.formats import load_dataset
from xfer.data.split import default_data
from xfer.errors import XferError
from xfer.meta import read_meta

if TYPE_CHECKING:
    import onnx


@dataclass
class TestSplit:
    """The model's test split inside the (memory-mapped) pack, cycled to ``n`` images: indices, never pixels."""

    __test__ = False  # not a pytest class, whatever its name

    images: np.ndarray
    order: np.ndarray
    labels: np.ndarray
    n: int
    note: str

    @property
    def index(self) -> np.ndarray:
        return np.resize(self.order, self.n)

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.images.shape[1:]))

    @property
    def truth(self) -> np.ndarray:
        """The labels of the ``n`` streamed images, in stream order."""
        return self.labels[self.index]


@dataclass
class Gathered:
    """The test split copied out of the pack into memory (the old path, and what the baselines read)."""

    images: np.ndarray
    labels: np.ndarray
    note: str


def _names(classes: list[str]) -> str:
    return ", ".join(classes[:8]) + (f", ... ({len(classes)} in all)" if len(classes) > 8 else "")


def test_split(model: onnx.ModelProto, data: str | None, images: int | None) -> TestSplit:
    """The model's own test split (from its metadata), optionally cycled up to ``images`` images."""
    meta = read_meta(model)
    pack = load_dataset(data or default_data())
    spec = meta.split or "random"
    seed = meta.split_seed or 0
    where = data or "the default data"
    if meta.classes is not None and list(meta.classes) != list(pack.classes):
        raise XferError(f"{where}: its classes ({_names(pack.classes)}) are not the model's ({_names(meta.classes)}); "
                        "bench a model on the data it was trained for")
    _, te = ferg.split(spec, pack.labels, pack.groups, pack.group_names, seed)
    if len(te) == 0:
        raise XferError(f"{where}: the model's test split {spec} (seed {seed}) has no images")
    note = f"test split {spec} (seed {seed}): {len(te)} images"
    if images and images != len(te):
        note += f", cycled to {images}"
    return TestSplit(pack.images, np.asarray(te, np.int64), np.asarray(pack.labels), images or len(te), note)


def gather(split: TestSplit) -> Gathered:
    """``split``'s images copied out of the pack, with their labels and its note."""
    index = split.index
    return Gathered(np.ascontiguousarray(split.images[index]), split.labels[index], split.note)


def load_test_images(model: onnx.ModelProto, data: str | None, images: int | None) -> Gathered:
    """The test split gathered into memory (``Stream`` reads the pack in chunks instead)."""
    return gather(test_split(model, data, images))
