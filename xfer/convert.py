"""Stage 2: MXNet symbol + params -> ONNX, with MXNet's own exporter, cleaned up and checked for parity.

MXNet 1.9.1's exporter imports ``onnx.mapping``, which current onnx removed;
``_install_onnx_mapping`` rebuilds that table from ``onnx.helper`` first.
"""

from __future__ import annotations

import json
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np

from xfer.config import ConvertConfig
from xfer.errors import XferError
from xfer.graph import finalize, simplify
from xfer.meta import write_meta

INPUT = "input"
OUTPUT = "logits"


def _install_onnx_mapping() -> None:
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


def load_mxnet(symbol_file: str | os.PathLike[str], params_file: str | os.PathLike[str],
               input_shape: tuple[int, ...] = (1, 28, 28), input_name: str = "data"):
    """Load a Gluon SymbolBlock, checking every parameter's shape against the symbol.

    MXNet itself defers shape checks to the first forward pass and then fails
    deep inside; here a mismatch is one line naming the file and the parameter.
    """
    import mxnet as mx

    for f in (symbol_file, params_file):
        if not Path(f).is_file():
            raise XferError(f"{f}: no such file")
    try:
        sym = mx.sym.load(str(symbol_file))
    except mx.base.MXNetError as e:
        raise XferError(f"{symbol_file}: not an MXNet symbol file ({str(e).splitlines()[0][:120]})") from None
    try:
        saved = mx.nd.load(str(params_file))
    except mx.base.MXNetError as e:
        raise XferError(f"{params_file}: not an MXNet params file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(saved, dict):
        raise XferError(f"{params_file}: not an MXNet params file (no parameter names)")
    params = {k.split(":", 1)[-1]: v for k, v in saved.items()}
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape(**{input_name: (1, *input_shape)})
    except mx.base.MXNetError as e:
        raise XferError(f"{symbol_file}: cannot infer shapes for input {(1, *input_shape)} "
                        f"({str(e).splitlines()[0][:120]})") from None
    expected = dict(zip(sym.list_arguments(), arg_shapes))
    expected.update(zip(sym.list_auxiliary_states(), aux_shapes))
    expected.pop(input_name, None)
    for name, shape in expected.items():
        if name not in params:
            raise XferError(f"{params_file}: parameters do not match {Path(symbol_file).name} (missing '{name}')")
        if tuple(params[name].shape) != tuple(shape):
            raise XferError(f"{params_file}: parameters do not match {Path(symbol_file).name} ('{name}' is "
                            f"{tuple(params[name].shape)}, the symbol needs {tuple(shape)})")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise XferError(f"{params_file}: parameters do not match {Path(symbol_file).name} (unused '{extra[0]}')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        block = mx.gluon.SymbolBlock(sym, mx.sym.var(input_name))
    block.collect_params().load(str(params_file), ctx=mx.cpu())
    return sym, block


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


def export(symbol_file: str | os.PathLike[str], params_file: str | os.PathLike[str],
           input_shape: tuple[int, ...], meta: dict[str, object]):
    """Run MXNet's exporter and return the cleaned ``onnx.ModelProto``."""
    import tempfile

    import onnx

    _install_onnx_mapping()
    import mxnet as mx

    load_mxnet(symbol_file, params_file, input_shape)  # validates files with clear errors before the exporter sees them
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            mx.onnx.export_model(str(symbol_file), str(params_file), in_shapes=[(1, *input_shape)],
                                 in_types=[np.float32], onnx_file_path=path, dynamic=True,
                                 dynamic_input_shapes=[(None, *input_shape)])
        except (mx.base.MXNetError, AttributeError, KeyError, ValueError) as e:
            raise XferError(f"{symbol_file}: MXNet's ONNX exporter failed ({str(e).splitlines()[0][:200]})") from None
        model = onnx.load(path)
    return _postprocess(model, meta)


def parity(block, model, input_shape: tuple[int, ...], n: int = 64, seed: int = 0) -> float:
    """Max |MXNet - ONNX Runtime| over ``n`` random inputs."""
    import mxnet as mx
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((n, *input_shape)).astype(np.float32)
    ref = block(mx.nd.array(x)).asnumpy()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT: x})[0]
    return float(np.abs(ref - got).max())


def main(args: ConvertConfig) -> dict:
    from xfer.io import write_bytes

    prefix = str(args.model)
    sym, params = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    info_path = Path(f"{prefix}.json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    input_shape = tuple(info.get("input_shape", [1, 28, 28]))
    meta = {"source": f"mxnet:{sym.name}", "mode": "source", "classes": info.get("classes", [str(i) for i in range(10)]),
            "input_shape": list(input_shape), "mean": info.get("mean", [0.0]), "std": info.get("std", [1.0]),
            "frozen": [], "dataset": info.get("source", "unknown"), "dataset_size": info.get("train_size")}
    model = export(sym, params, input_shape, meta)
    _, block = load_mxnet(sym, params, input_shape, info.get("input_name", "data"))
    diff = parity(block, model, input_shape)
    if diff > args.tolerance:
        raise XferError(f"{sym}: ONNX output differs from MXNet by {diff:.3g} (> {args.tolerance:g})")
    out = Path(args.out)
    write_bytes(out, model.SerializeToString())
    print(f"wrote {out}: {len(model.graph.node)} nodes, opset {model.opset_import[0].version}, "
          f"MXNet vs ONNX Runtime max |diff| {diff:.2e} on 64 inputs")
    return {"out": str(out), "max_abs_diff": diff}
