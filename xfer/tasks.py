"""What is trained, as objects chosen once: a transfer from a source model, or the multi-task DAN network.

``train`` and ``loop`` ask the task (how to build the graph, the loss, the
extra metric, whether to augment) and never which task it is. A new kind of
network is one ``Task`` in ``TASKS`` and its name in ``config.MODEL_KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xfer.config import MODEL_KINDS, TrainConfig
from xfer.dan import LandmarkMetric, TaskLoss, build_dan, eye_indices, init_from
from xfer.data.sidecars import LANDMARK_NAMES, scheme_of
from xfer.data.split import Split
from xfer.errors import XferError
from xfer.graph import load_model
from xfer.surgery import apply

if TYPE_CHECKING:
    import onnx


def _build_transfer(cfg: TrainConfig, data: Split) -> onnx.ModelProto:
    return apply(str(cfg.mode), load_model(cfg.source_path), data.classes, cfg.channels, cfg.size, cfg.head,
                 cfg.train_all, cfg.seed)


def _build_dan(cfg: TrainConfig, data: Split) -> onnx.ModelProto:
    if data.landmarks is None:
        raise XferError("--model dan needs landmarks in the data (the synthetic FERG-DB has them; real FERG-DB does not)")
    mean_shape = data.landmarks[data.train_index].mean(0)
    m = build_dan((cfg.channels, *cfg.size), data.classes, data.landmarks.shape[1], cfg.width, cfg.seed, cfg.stages,
                  mean_shape)
    return init_from(m, load_model(cfg.source), cfg.source) if cfg.source else m


@dataclass(frozen=True)
class Task:
    """One kind of training run.

    ``multitask``: the graph has a landmark head, so the landmark loss (``--alpha``) applies and test landmarks are
    scored; the landmarks move with the flipped and shifted images (a flip swaps left and right points).
    """

    name: str
    build: Callable[[TrainConfig, Split], onnx.ModelProto]
    multitask: bool

    def check(self, cfg: TrainConfig) -> None:
        if cfg.transfers and not Path(cfg.source_path).is_file():
            raise XferError(f"{cfg.source_path}: source model not found (run `xfer pretrain` and `xfer convert` first)")
        if not cfg.transfers and cfg.source and not Path(cfg.source).is_file():
            raise XferError(f"{cfg.source}: DAN to start from not found (a model `xfer train --model dan` wrote)")

    def source(self, cfg: TrainConfig) -> str | None:
        return cfg.source_path if cfg.transfers else cfg.source

    def alpha(self, cfg: TrainConfig) -> float:
        return cfg.alpha if self.multitask else 0.0

    def augments(self, cfg: TrainConfig) -> bool:
        return cfg.augment

    def criterion(self, cfg: TrainConfig, data: Split) -> TaskLoss:
        lm, tr = data.landmarks, data.train_index
        count = lm.shape[1] if lm is not None else len(LANDMARK_NAMES)
        mirror = list(scheme_of(count).mirror) if self.multitask else None
        return TaskLoss(data.y_train, None if data.votes is None else data.votes[tr], None if lm is None else lm[tr],
                        cfg.label_scheme, self.alpha(cfg), cfg.beta, eye_indices(count), mirror,
                        cfg.stages if self.multitask else 1)

    def metric(self, data: Split) -> LandmarkMetric | None:
        """The test-set landmark metric of a multi-task run (None otherwise)."""
        if not self.multitask or data.landmarks is None:
            return None
        return LandmarkMetric(data.landmarks[data.test_index])


TASKS: dict[str, Task] = {"lenet": Task("lenet", _build_transfer, False), "dan": Task("dan", _build_dan, True)}
assert set(TASKS) == set(MODEL_KINDS), "every network kind the config accepts has a task"


def task_of(cfg: TrainConfig) -> Task:
    return TASKS[cfg.model]
