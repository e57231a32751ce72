"""Stage 1: LeNet-5 trained on digits in MXNet Gluon, saved as symbol + params under ``models/``.

ReLU and max pooling rather than the 1998 tanh/subsampling: they train faster
from scratch and transfer better, and every downstream pass handles either.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from xfer.config import PretrainConfig
from xfer.errors import XferError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
INPUT_NAME = "data"


def build_lenet5(activation: str = "relu", classes: int = 10):
    """conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> FC 120 -> FC 84 -> classes."""
    from mxnet.gluon import nn

    if activation not in ("relu", "tanh", "sigmoid"):
        raise XferError(f"--activation: expected relu, tanh or sigmoid, got '{activation}'")
    net = nn.HybridSequential(prefix="lenet5_")
    with net.name_scope():
        net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation=activation, prefix="conv1_"),
                nn.MaxPool2D(pool_size=2, strides=2),
                nn.Conv2D(16, kernel_size=5, activation=activation, prefix="conv2_"),
                nn.MaxPool2D(pool_size=2, strides=2),
                nn.Flatten(),
                nn.Dense(120, activation=activation, prefix="fc1_"),
                nn.Dense(84, activation=activation, prefix="fc2_"),
                nn.Dense(classes, prefix="fc3_"))
    return net


def normalize(x: np.ndarray) -> np.ndarray:
    """uint8 digits (N, 28, 28) -> float32 (N, 1, 28, 28) in MNIST's normalisation."""
    return ((x.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None]


def _shift(batch: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Random translations of up to ``max_shift`` pixels: cheap augmentation that matters for small data."""
    out = np.empty_like(batch)
    n, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    for i in range(n):
        out[i] = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


def evaluate(net, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    import mxnet as mx

    correct = 0
    for i in range(0, len(x), batch_size):
        out = net(mx.nd.array(normalize(x[i:i + batch_size]))).asnumpy()
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def train(digits, epochs: int = 15, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
          activation: str = "relu", progress: bool = True):
    """Train LeNet-5 on ``digits``; return (net, history)."""
    import mxnet as mx
    from mxnet import autograd, gluon

    from xfer.progress import bar

    if epochs < 1:
        raise XferError(f"--epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise XferError(f"--batch-size must be >= 1, got {batch_size}")
    mx.random.seed(seed)
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    net = build_lenet5(activation)
    net.initialize(mx.init.Xavier(magnitude=2.24), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=False)
    n = len(digits.x_train)
    steps = (n + batch_size - 1) // batch_size
    schedule = mx.lr_scheduler.CosineScheduler(max_update=max(1, epochs * steps), base_lr=lr, final_lr=lr * 0.01)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": lr, "lr_scheduler": schedule})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = []
    with bar(epochs * steps, "pretrain", "batch", disable=not progress) as pb:
        for epoch in range(epochs):
            t0 = time.time()
            order = rng.permutation(n)
            total, correct = mx.nd.zeros(1), mx.nd.zeros(1)  # summed on the device: no sync per step
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                xb = mx.nd.array(normalize(_shift(digits.x_train[idx], rng)))
                yb = mx.nd.array(digits.y_train[idx])
                with autograd.record():
                    out = net(xb)
                    loss = loss_fn(out, yb)
                loss.backward()
                trainer.step(len(idx))
                total += loss.sum()
                correct += (out.argmax(axis=1) == yb).sum()
                pb.update(1)
                if s % 50 == 49:
                    pb.set_postfix(epoch=epoch + 1, loss=f"{total.asscalar() / min(n, (s + 1) * batch_size):.3f}")
            test_acc = evaluate(net, digits.x_test, digits.y_test)
            history.append({"epoch": epoch + 1, "loss": float(total.asscalar()) / n,
                            "train_acc": float(correct.asscalar()) / n, "test_acc": test_acc, "seconds": time.time() - t0})
    return net, history


def save(net, prefix: str | os.PathLike[str], info: dict) -> tuple[Path, Path, Path]:
    """Export symbol + params (+ a JSON sidecar), each renamed into place only once complete."""
    import tempfile

    from xfer.io import write_json

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    sym, params = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    with tempfile.TemporaryDirectory(dir=prefix.parent, prefix=".export.") as tmp:
        net.export(os.path.join(tmp, "net"), epoch=0)
        os.replace(os.path.join(tmp, "net-0000.params"), params)
        os.replace(os.path.join(tmp, "net-symbol.json"), sym)
    meta = write_json(f"{prefix}.json", info)
    return sym, params, meta


def main(args: PretrainConfig) -> dict:
    from xfer.data.digits import load_digits

    digits = load_digits(args.mnist, seed=args.seed, digits=args.digits)
    t0 = time.time()
    net, history = train(digits, args.epoch_count, args.batch_size, args.lr, args.seed, args.activation)
    acc = history[-1]["test_acc"]
    info = {"source": digits.source, "train_size": len(digits.x_train), "test_size": len(digits.x_test),
            "test_accuracy": acc, "epochs": args.epoch_count, "seed": args.seed, "activation": args.activation,
            "classes": [str(i) for i in range(10)], "input_shape": [1, 28, 28], "input_name": INPUT_NAME,
            "mean": [MNIST_MEAN], "std": [MNIST_STD], "seconds": time.time() - t0, "history": history}
    sym, params, meta = save(net, args.out, info)
    print(f"LeNet-5 on {digits.source}, {len(digits.x_train):,} training digits: test accuracy {acc:.4f} "
          f"({len(digits.x_test):,} test digits) in {info['seconds']:.1f}s")
    print(f"wrote {sym}, {params}, {meta}")
    return info
