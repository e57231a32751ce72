"""The MXNet worker: LeNet-5 pretraining and MXNet's ONNX exporter, run in the MXNet environment.

Run as ``python -I mxnet_worker.py JOB.json`` by ``xfer.envs``; it imports only the
standard library, numpy, MXNet, onnx and ``common`` (the workers' protocol), never
xfer, which needs numpy 2.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import types
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import EnvironmentProblem, JobError, emit, first_line, main, need  # noqa: E402

try:
    import numpy as np
except Exception as _e:  # noqa: BLE001 -- reported as an environment problem by the commands that need numpy
    np, NUMPY_PROBLEM = None, f"cannot import numpy ({type(_e).__name__}: {str(_e)[:160]})"


def _mxnet():
    if np is None:
        raise EnvironmentProblem(NUMPY_PROBLEM)
    return need("mxnet")


def build_lenet5(activation: str, classes: int = 10):
    """conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> FC 120 -> FC 84 -> classes."""
    from mxnet.gluon import nn

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


def normalize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 digits (N, 28, 28) -> float32 (N, 1, 28, 28)."""
    return ((x.astype(np.float32) / 255.0 - mean) / std)[:, None]


def shift(batch: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Random translations of up to ``max_shift`` pixels: cheap augmentation that matters for small data."""
    out = np.empty_like(batch)
    n, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    for i in range(n):
        out[i] = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


def evaluate(mx, net, x: np.ndarray, y: np.ndarray, mean: float, std: float, batch_size: int = 512) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        out = net(mx.nd.array(normalize(x[i:i + batch_size], mean, std))).asnumpy()
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def _load_digits(path: str) -> tuple[np.ndarray, ...]:
    with np.load(path, allow_pickle=False) as d:
        return tuple(d[k] for k in ("x_train", "y_train", "x_test", "y_test"))


def _epoch(mx, autograd, net, trainer, loss_fn, job: dict, x: np.ndarray, y: np.ndarray, rng, done: int) -> tuple[float, float]:
    """One pass over the shuffled training digits; returns (mean loss, accuracy)."""
    n, bs = len(x), job["batch_size"]
    order = rng.permutation(n)
    total, correct = mx.nd.zeros(1), mx.nd.zeros(1)  # summed on the device: no sync per step
    for s, i in enumerate(range(0, n, bs)):
        idx = order[i:i + bs]
        xb = mx.nd.array(normalize(shift(x[idx], rng), job["mean"], job["std"]))
        yb = mx.nd.array(y[idx])
        with autograd.record():
            out = net(xb)
            loss = loss_fn(out, yb)
        loss.backward()
        trainer.step(len(idx))
        total += loss.sum()
        correct += (out.argmax(axis=1) == yb).sum()
        if s % 20 == 19 or i + bs >= n:
            emit(step=done + s + 1, loss=round(float(total.asscalar()) / min(n, i + bs), 4))
    return float(total.asscalar()) / n, float(correct.asscalar()) / n


def pretrain(job: dict) -> dict:
    """Train LeNet-5 on the job's digits (npz) and export symbol + params to ``job["out"]``."""
    mx = _mxnet()
    from mxnet import autograd, gluon

    x_train, y_train, x_test, y_test = _load_digits(job["digits"])
    mx.random.seed(job["seed"])
    np.random.seed(job["seed"])
    rng = np.random.default_rng(job["seed"])
    net = build_lenet5(job["activation"])
    net.initialize(mx.init.Xavier(magnitude=2.24), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=False)
    steps = (len(x_train) + job["batch_size"] - 1) // job["batch_size"]
    lr = job["lr"]
    schedule = mx.lr_scheduler.CosineScheduler(max_update=max(1, job["epochs"] * steps), base_lr=lr, final_lr=lr * 0.01)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": lr, "lr_scheduler": schedule})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    emit(total=job["epochs"] * steps)
    started = time.time()
    history = []
    for epoch in range(job["epochs"]):
        t0 = time.time()
        loss, acc = _epoch(mx, autograd, net, trainer, loss_fn, job, x_train, y_train, rng, epoch * steps)
        test_acc = evaluate(mx, net, x_test, y_test, job["mean"], job["std"])
        history.append({"epoch": epoch + 1, "loss": loss, "train_acc": acc, "test_acc": test_acc, "seconds": time.time() - t0})
        emit(epoch=epoch + 1, test_acc=round(test_acc, 4))
    _export_block(net, job["out"])
    return {"history": history, "mxnet": mx.__version__, "seconds": time.time() - started}


def _export_block(net, prefix: str) -> None:
    """Symbol + params, each renamed into place only once complete."""
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".export.") as tmp:
        net.export(os.path.join(tmp, "net"), epoch=0)
        os.replace(os.path.join(tmp, "net-0000.params"), f"{prefix}-0000.params")
        os.replace(os.path.join(tmp, "net-symbol.json"), f"{prefix}-symbol.json")


def _check_params(mx, sym, params: dict, symbol_file: str, params_file: str, input_shape: tuple, input_name: str) -> None:
    """Every parameter the symbol needs, of the shape it needs, and nothing else."""
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape(**{input_name: (1, *input_shape)})
    except mx.base.MXNetError as e:
        raise JobError(f"{symbol_file}: cannot infer shapes for input {(1, *input_shape)} ({first_line(e)})") from None
    expected = dict(zip(sym.list_arguments(), arg_shapes))
    expected.update(zip(sym.list_auxiliary_states(), aux_shapes))
    expected.pop(input_name, None)
    name = os.path.basename(symbol_file)
    for key, shape in expected.items():
        if key not in params:
            raise JobError(f"{params_file}: parameters do not match {name} (missing '{key}')")
        if tuple(params[key].shape) != tuple(shape):
            raise JobError(f"{params_file}: parameters do not match {name} ('{key}' is "
                           f"{tuple(params[key].shape)}, the symbol needs {tuple(shape)})")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise JobError(f"{params_file}: parameters do not match {name} (unused '{extra[0]}')")


def load_block(mx, symbol_file: str, params_file: str, input_shape: tuple, input_name: str):
    """A Gluon SymbolBlock, every parameter's shape checked first.

    MXNet itself defers shape checks to the first forward pass and then fails
    deep inside; here a mismatch is one line naming the file and the parameter.
    """
    for f in (symbol_file, params_file):
        if not os.path.isfile(f):
            raise JobError(f"{f}: no such file")
    try:
        sym = mx.sym.load(symbol_file)
    except mx.base.MXNetError as e:
        raise JobError(f"{symbol_file}: not an MXNet symbol file ({first_line(e)})") from None
    try:
        saved = mx.nd.load(params_file)
    except mx.base.MXNetError as e:
        raise JobError(f"{params_file}: not an MXNet params file ({first_line(e)})") from None
    if not isinstance(saved, dict):
        raise JobError(f"{params_file}: not an MXNet params file (no parameter names)")
    params = {k.split(":", 1)[-1]: v for k, v in saved.items()}
    _check_params(mx, sym, params, symbol_file, params_file, input_shape, input_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        block = mx.gluon.SymbolBlock(sym, mx.sym.var(input_name))
    block.collect_params().load(params_file, ctx=mx.cpu())
    return block


def install_onnx_mapping() -> None:
    """MXNet 1.9.1's exporter imports ``onnx.mapping``, which current onnx removed: rebuild it from ``onnx.helper``."""
    import onnx
    from onnx import TensorProto, helper

    if hasattr(onnx, "mapping") and hasattr(onnx.mapping, "NP_TYPE_TO_TENSOR_TYPE"):
        return
    to_np = {}
    for _name, code in TensorProto.DataType.items():
        if code == TensorProto.UNDEFINED:
            continue
        try:
            to_np[code] = np.dtype(helper.tensor_dtype_to_np_dtype(code))
        except (KeyError, TypeError, ValueError):
            continue
    from_np = {}
    for code, dt in to_np.items():
        from_np.setdefault(dt, code)
    mod = types.ModuleType("onnx.mapping")
    mod.TENSOR_TYPE_TO_NP_TYPE = to_np
    mod.NP_TYPE_TO_TENSOR_TYPE = from_np
    sys.modules["onnx.mapping"] = mod
    onnx.mapping = mod


def export(job: dict) -> dict:
    """MXNet's own ONNX exporter on symbol + params, and MXNet's outputs on the caller's parity inputs."""
    mx = _mxnet()
    shape = tuple(job["input_shape"])
    block = load_block(mx, job["symbol"], job["params"], shape, job["input_name"])
    try:
        install_onnx_mapping()
    except ImportError as e:
        raise EnvironmentProblem(f"cannot import onnx ({e})") from None
    try:
        mx.onnx.export_model(job["symbol"], job["params"], in_shapes=[(1, *shape)], in_types=[np.float32],
                             onnx_file_path=job["onnx"], dynamic=True, dynamic_input_shapes=[(None, *shape)])
    except (mx.base.MXNetError, AttributeError, KeyError, ValueError) as e:
        raise JobError(f"{job['symbol']}: MXNet's ONNX exporter failed ({first_line(e)})") from None
    x = np.load(job["inputs"], allow_pickle=False)
    np.save(job["outputs"], block(mx.nd.array(x)).asnumpy())
    return {"mxnet": mx.__version__}


if __name__ == "__main__":
    sys.exit(main(sys.argv, {"pretrain": pretrain, "export": export}))
