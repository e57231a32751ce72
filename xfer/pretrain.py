"""Stage 1: LeNet-5 trained on digits in MXNet Gluon, saved as symbol + params under ``models/``.

The digits are loaded here (numpy 2) and handed to the pretraining environment
as an ``.npz``; MXNet trains there (``mxnet_worker``) and writes symbol + params;
this side writes the JSON sidecar and shows progress. ReLU and max pooling rather
than the 1998 tanh/subsampling: they train faster and transfer better, and every
downstream pass handles either.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer import envs
from xfer.config import PRETRAIN_BATCH, PRETRAIN_LR, PretrainConfig
from xfer.data.digits import DigitSet, load_digits
from xfer.io import write_json
from xfer.progress import bar
from xfer.records import Record

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
INPUT_NAME = "data"


@dataclass
class PretrainResult(Record):
    """The pretrained source (``OUT.json``, the sidecar ``xfer convert`` reads): its digits, accuracy and settings."""

    source: str
    train_size: int
    test_size: int
    test_accuracy: float
    epochs: int
    seed: int
    activation: str
    classes: list[str]
    input_shape: list[int]
    input_name: str
    mean: list[float]
    std: list[float]
    mxnet: str | None
    seconds: float
    history: list[dict[str, float]]

    @staticmethod
    def files(out: str | os.PathLike[str]) -> list[str]:
        """What ``pretrain(..., out)`` writes."""
        return [f"{out}-symbol.json", f"{out}-0000.params", f"{out}.json"]


class _Bar:
    """Turns the worker's progress lines into a progress bar with rate and ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.pb = enabled, None
        self.postfix: dict[str, str] = {}

    def __call__(self, fields: dict) -> None:
        if "total" in fields:
            self.pb = bar(fields["total"], "pretrain", "batch", disable=not self.enabled)
        elif self.pb is not None:
            self.postfix.update({k: v for k, v in fields.items() if k != "step"})
            self.pb.set_postfix(self.postfix, refresh=False)
            if "step" in fields:
                self.pb.update(fields["step"] - self.pb.n)

    def close(self) -> None:
        if self.pb is not None:
            self.pb.close()


def pretrain(digits: DigitSet, out: str | os.PathLike[str], epochs: int, batch_size: int = PRETRAIN_BATCH, lr: float = PRETRAIN_LR,
             seed: int = 0, activation: str = "relu", progress: bool = True) -> PretrainResult:
    """Train LeNet-5 on ``digits`` in the pretraining environment; write ``out``-symbol.json / -0000.params / .json."""
    bar = _Bar(progress)
    with tempfile.TemporaryDirectory(prefix="xfer-digits-") as tmp:
        arrays = os.path.join(tmp, "digits.npz")
        np.savez(arrays, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test)
        try:
            done = envs.run("pretrain", {"digits": arrays, "out": str(Path(out).absolute()), "epochs": epochs,
                                                 "batch_size": batch_size, "lr": lr, "seed": seed,
                                                 "activation": activation, "mean": MNIST_MEAN, "std": MNIST_STD}, bar)
        finally:
            bar.close()
    history = done["history"]
    info = PretrainResult(digits.source, len(digits.x_train), len(digits.x_test), history[-1]["test_acc"], epochs, seed,
                          activation, [str(i) for i in range(10)], [1, 28, 28], INPUT_NAME, [MNIST_MEAN], [MNIST_STD],
                          done.get("mxnet"), done["seconds"], history)
    write_json(f"{out}.json", info.to_json())
    return info


def main(args: PretrainConfig) -> PretrainResult:
    digits = load_digits(args.mnist, seed=args.seed, digits=args.digits)
    return pretrain(digits, args.out, args.epoch_count, args.batch_size, args.lr, args.seed, args.activation)
