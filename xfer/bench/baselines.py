"""The paths xfer's pass is compared with, as records: a new baseline is one ``Baseline`` in ``BASELINES``.

Each runs on the gathered test images with the gathered pass's tuned ONNX
Runtime session; its ratio to xfer's path (end-to-end ones) or to the kernel
(preprocessing-only ones) is derived from its record.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from xfer.bench.inputs import Gathered
from xfer.bench.session import infer
from xfer.bench.timing import PathResult, timed
from xfer.graph import InputSpec

if TYPE_CHECKING:
    import onnx

NAIVE_BATCH = 256


@dataclass
class BaselineInput:
    """What every baseline gets: the model, the gathered images, the tuned session and the pass's settings."""

    model: onnx.ModelProto
    gathered: Gathered
    spec: InputSpec
    session: Any
    batch: int
    repeat: int
    per_image_limit: int

    def accuracy(self, pred: np.ndarray, k: int | None = None) -> float:
        return float((pred == self.gathered.labels[:k]).mean())

    @cached_property
    def predict(self) -> Callable[[np.ndarray], np.ndarray]:
        """PyTorch eager on xfer's import of the model (imported once for every baseline that asks)."""
        return _torch_net(self.model)


@dataclass(frozen=True)
class Baseline:
    """One compared path: its JSON key, its table label, whether it is a whole test pass, and how it runs.

    ``against`` names xfer's path it is compared with when it only preprocesses (``end_to_end`` False).
    """

    name: str
    label: str
    end_to_end: bool
    run: Callable[[BaselineInput], PathResult]
    against: str = "kernel"

    def ratio_key(self) -> str:
        slug = self.name.replace("+", "_")
        return f"end_to_end_vs_{slug}" if self.end_to_end else f"{self.against}_vs_{slug}_speedup"


def opencv_preprocess(images: np.ndarray, size: tuple[int, int], channels: int, mean: Sequence[float],
                      std: Sequence[float]) -> np.ndarray:
    """The per-image OpenCV path: colour conversion, INTER_AREA resize, normalise."""
    import cv2

    out = np.empty((len(images), channels, *size), np.float32)
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    for i, im in enumerate(images):
        if channels == 1:
            g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.shape[2] == 3 else im[:, :, 0]
            r = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)[None]
        else:
            r = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        out[i] = (r.astype(np.float32) * np.float32(1 / 255) - m) / s
    return out


def pil_preprocess_one(im: np.ndarray, size: tuple[int, int], channels: int, mean: Sequence[float],
                       std: Sequence[float]) -> np.ndarray:
    """The naive path for one image: PIL resize and convert, numpy normalise."""
    from PIL import Image

    p = Image.fromarray(im).convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.Resampling.BOX)
    a = np.asarray(p, np.float32) / 255.0
    a = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return (a - np.asarray(mean, np.float32).reshape(-1, 1, 1)) / np.asarray(std, np.float32).reshape(-1, 1, 1)


def _opencv(b: BaselineInput) -> PathResult:
    s = b.spec
    times, _ = timed(lambda: opencv_preprocess(b.gathered.images, s.size, s.channels, s.mean, s.std), b.repeat)
    return PathResult.of(times, len(b.gathered.images))


def _opencv_ort(b: BaselineInput) -> PathResult:
    s = b.spec
    times, pred = timed(lambda: infer(b.session, opencv_preprocess(b.gathered.images, s.size, s.channels, s.mean, s.std),
                                      b.batch), max(1, b.repeat // 2))
    return PathResult.of(times, len(pred), b.accuracy(pred))


def _torch_net(model: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch eager on xfer's import of ``model``: float32 NCHW in, predicted classes out."""
    import torch

    from xfer.importer import logits_of, to_torch  # torch stays out of `xfer bench` unless this baseline runs

    torch.set_num_threads(os.cpu_count() or 1)
    net = to_torch(model).eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return logits_of(net(torch.from_numpy(x))).argmax(1).numpy()

    return predict


def _naive_batched(b: BaselineInput) -> PathResult:
    predict, s, x = b.predict, b.spec, b.gathered.images

    def run() -> np.ndarray:
        return np.concatenate([predict(np.stack([pil_preprocess_one(im, s.size, s.channels, s.mean, s.std)
                                                 for im in x[i:i + NAIVE_BATCH]])) for i in range(0, len(x), NAIVE_BATCH)])

    times, pred = timed(run, max(1, b.repeat // 2), warmup=0)
    return PathResult.of(times, len(x), b.accuracy(pred), batch=NAIVE_BATCH)


def _naive_per_image(b: BaselineInput) -> PathResult:
    predict, s, x = b.predict, b.spec, b.gathered.images
    n, k = len(x), min(len(x), b.per_image_limit)
    times, pred = timed(lambda: np.array([int(predict(pil_preprocess_one(im, s.size, s.channels, s.mean, s.std)[None])[0])
                                          for im in x[:k]]), 1, warmup=0)
    return PathResult.estimate(times[0] * n / k, n, runs=1, accuracy=b.accuracy(pred, k), measured_images=k,
                               note=f"timed on {k} images, scaled to {n}" if k < n else "timed on all images")


BASELINES: list[Baseline] = [
    Baseline("opencv", "OpenCV preprocess (per image)", False, _opencv),
    Baseline("opencv+ort", "OpenCV + ONNX Runtime", True, _opencv_ort),
    Baseline("naive_batched", f"PIL + numpy + PyTorch, batch {NAIVE_BATCH}", True, _naive_batched),
    Baseline("naive_per_image", "PIL + numpy + PyTorch, per image", True, _naive_per_image),
]


def run_baselines(b: BaselineInput) -> dict[str, PathResult]:
    """Every baseline in ``BASELINES``, by name."""
    return {x.name: x.run(b) for x in BASELINES}
