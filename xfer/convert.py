"""Stage 2: MXNet symbol + params -> ONNX, with MXNet's own exporter, cleaned up and checked for parity.

The exporter runs in the pretraining environment (``mxnet_worker``), which also
computes MXNet's outputs on random inputs drawn here; this side cleans the
graph up and compares those outputs with ONNX Runtime's. Only files cross.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer import pretrain_env
from xfer.config import ConvertConfig
from xfer.errors import XferError
from xfer.graph import finalize, simplify
from xfer.io import write_bytes
from xfer.meta import write_meta
from xfer.records import Record

INPUT = "input"
OUTPUT = "logits"
PARITY_INPUTS = 64


# MXNet's exporter stamps the newest opset the installed onnx knows (28 here), which ONNX Runtime's quantizer and
# older runtimes lack. These ops mean the same for float tensors from opset 13 on, so the model is pinned to 17.
TARGET_OPSET = 17
STABLE_SINCE_13 = {"Conv", "Relu", "Tanh", "Sigmoid", "MaxPool", "AveragePool", "Flatten", "Gemm", "Reshape",
                   "Identity", "Dropout", "Softmax", "BatchNormalization", "Add", "Mul", "MatMul", "Concat"}


def _pin_opset(model) -> None:
    ops = {n.op_type for n in model.graph.node}
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if default and default[0].version > TARGET_OPSET and ops <= STABLE_SINCE_13:
        default[0].version = TARGET_OPSET
        model.ir_version = min(model.ir_version, 8)


def _postprocess(model, meta: dict[str, object]):
    """Initializers out of graph inputs, a symbolic batch dimension, stable names, metadata."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    if len(g.input) != 1 or len(g.output) != 1:
        raise XferError(f"expected one input and one output, got {len(g.input)} and {len(g.output)}")
    renames = {g.input[0].name: INPUT, g.output[0].name: OUTPUT}
    g.input[0].name, g.output[0].name = INPUT, OUTPUT
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in (g.input[0], g.output[0]):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    _pin_opset(model)
    g.name = "lenet5"
    model.producer_name = "xfer"
    write_meta(model, **meta)
    simplify(model)
    return finalize(model)


def export(symbol_file: str | os.PathLike[str], params_file: str | os.PathLike[str], input_shape: tuple[int, ...],
           meta: dict[str, object], input_name: str = "data", seed: int = 0):
    """MXNet's exporter in the pretraining environment -> (cleaned ``onnx.ModelProto``, max |MXNet - ONNX Runtime|)."""
    import onnx

    x = np.random.default_rng(seed).standard_normal((PARITY_INPUTS, *input_shape)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="xfer-convert-") as tmp:
        files = {k: os.path.join(tmp, name) for k, name in
                 (("onnx", "model.onnx"), ("inputs", "x.npy"), ("outputs", "y.npy"))}
        np.save(files["inputs"], x)
        pretrain_env.run("export", {"symbol": str(Path(symbol_file).absolute()), "params": str(Path(params_file).absolute()),
                                    "input_shape": list(input_shape), "input_name": input_name, **files})
        model = onnx.load(files["onnx"])
        reference = np.load(files["outputs"], allow_pickle=False)
    model = _postprocess(model, meta)
    return model, parity(model, x, reference)


def parity(model, x: np.ndarray, reference: np.ndarray) -> float:
    """Max |reference - ONNX Runtime| on inputs ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT: x})[0]
    if got.shape != reference.shape:
        raise XferError(f"the exported ONNX model outputs {got.shape}, MXNet {reference.shape}")
    return float(np.abs(reference - got).max())


@dataclass
class ConvertResult(Record):
    """The ONNX file written and how closely it matches the framework's own outputs."""

    out: str
    max_abs_diff: float
    nodes: int
    opset: int
    parity_inputs: int


def main(args: ConvertConfig) -> ConvertResult:
    prefix = str(args.model)
    sym, params = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    info_path = Path(f"{prefix}.json")
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XferError(f"{info_path}: not a JSON sidecar ({e})") from None
    input_shape = tuple(info.get("input_shape", [1, 28, 28]))
    meta = {"source": f"mxnet:{sym.name}", "mode": "source", "classes": info.get("classes", [str(i) for i in range(10)]),
            "input_shape": list(input_shape), "mean": info.get("mean", [0.0]), "std": info.get("std", [1.0]),
            "frozen": [], "dataset": info.get("source", "unknown"), "dataset_size": info.get("train_size")}
    model, diff = export(sym, params, input_shape, meta, info.get("input_name", "data"))
    if diff > args.tolerance:
        raise XferError(f"{sym}: ONNX output differs from MXNet by {diff:.3g} (> {args.tolerance:g})")
    out = Path(args.out)
    write_bytes(out, model.SerializeToString())
    return ConvertResult(str(out), diff, len(model.graph.node), model.opset_import[0].version, PARITY_INPUTS)
