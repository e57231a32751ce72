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
from pathlib import Path

import numpy as np

from xfer.config import PRETRAIN_BATCH, PRETRAIN_LR, PretrainConfig
from xfer.data.digits import DigitSet

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
INPUT_NAME = "data"


class _Bar:
    """Turns the worker's progress lines into a progress bar with rate and ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.pb = enabled, None
        self.postfix: dict[str, str] = {}

    def __call__(self, fields: dict) -> None:
        from xfer.progress import bar

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
             seed: int = 0, activation: str = "relu", progress: bool = True) -> dict:
    """Train LeNet-5 on ``digits`` in the pretraining environment; write ``out``-symbol.json / -0000.params / .json."""
    from xfer import pretrain_env
    from xfer.io import write_json

    bar = _Bar(progress)
    with tempfile.TemporaryDirectory(prefix="xfer-digits-") as tmp:
        arrays = os.path.join(tmp, "digits.npz")
        np.savez(arrays, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test)
        try:
            done = pretrain_env.run("pretrain", {"digits": arrays, "out": str(Path(out).absolute()), "epochs": epochs,
                                                 "batch_size": batch_size, "lr": lr, "seed": seed,
                                                 "activation": activation, "mean": MNIST_MEAN, "std": MNIST_STD}, bar)
        finally:
            bar.close()
    history = done["history"]
    info = {"source": digits.source, "train_size": len(digits.x_train), "test_size": len(digits.x_test),
            "test_accuracy": history[-1]["test_acc"], "epochs": epochs, "seed": seed, "activation": activation,
            "classes": [str(i) for i in range(10)], "input_shape": [1, 28, 28], "input_name": INPUT_NAME,
            "mean": [MNIST_MEAN], "std": [MNIST_STD], "mxnet": done.get("mxnet"), "seconds": done["seconds"],
            "history": history}
    write_json(f"{out}.json", info)
    return info


def main(args: PretrainConfig) -> dict:
    from xfer.data.digits import load_digits

    digits = load_digits(args.mnist, seed=args.seed, digits=args.digits)
    info = pretrain(digits, args.out, args.epoch_count, args.batch_size, args.lr, args.seed, args.activation)
    print(f"LeNet-5 on {digits.source}, {len(digits.x_train):,} training digits: test accuracy {info['test_accuracy']:.4f} "
          f"({len(digits.x_test):,} test digits) in {info['seconds']:.1f}s")
    print(f"wrote {args.out}-symbol.json, {args.out}-0000.params, {args.out}.json")
    return info
