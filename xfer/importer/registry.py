"""The converter registry: ONNX op type -> a function building a small ``torch.nn.Module`` for one node.

Each converter is declared once with the opset versions of the op it was
written against and which of the node's inputs are state (buffers, not
trainable parameters). ``convert_node`` refuses, with ``XferError``, an op
without a converter, an op version outside the declared range, and input
types the converter does not handle, so an import either runs with ONNX
semantics or stops with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onnx import TensorProto, helper

from xfer.errors import XferError

# What an ONNX attribute holds once read: a number, a string, a tensor, a subgraph, or a list of those.
AttrValue = Any

Converter = Callable[[Any, dict[str, Any], int], Any]

FLOATS = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})
SIGNED = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64})
NUMERIC = FLOATS | SIGNED | {TensorProto.UINT8}
ANY = NUMERIC | {TensorProto.BOOL}


@dataclass(frozen=True)
class Spec:
    """One registered converter: which op versions it implements and what it accepts."""

    op: str
    fn: Converter
    since: int                      # first opset version of the op it implements
    until: int                      # last version of the op it was written against (inclusive)
    buffers: tuple[int, ...] = ()   # inputs that are state (e.g. running statistics), not parameters
    types: frozenset = NUMERIC      # element types accepted for the first (data) input


REGISTRY: dict[str, Spec] = {}


def register(*op_types: str, since: int = 1, until: int, buffers: tuple[int, ...] = (),
             types: frozenset = NUMERIC) -> Callable[[Converter], Converter]:
    """Declare ``fn`` the converter of ``op_types``; a second converter for the same op is a bug."""
    def deco(fn: Converter) -> Converter:
        for op in op_types:
            if op in REGISTRY:
                raise ValueError(f"converter for {op} registered twice ({REGISTRY[op].fn.__name__} and {fn.__name__})")
            REGISTRY[op] = Spec(op, fn, since, until, tuple(buffers), frozenset(types))
        return fn

    return deco


def attributes(node) -> dict[str, AttrValue]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def node_label(node) -> str:
    return f"node '{node.name or (node.output[0] if node.output else node.op_type)}' ({node.op_type})"


def op_version(op_type: str, opset: int) -> int:
    """The version of ``op_type`` that a model importing ``opset`` uses."""
    import onnx.defs

    try:
        return onnx.defs.get_schema(op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return opset


def spec_for(node, opset: int) -> Spec:
    spec = REGISTRY.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if spec is None:
        raise XferError(f"node '{node.name or node.output[0]}': unsupported ONNX op {node.domain + '.' if node.domain else ''}"
                        f"{node.op_type} (xfer converts {len(REGISTRY)} ops; `xfer.importer.supported_ops()` lists them)")
    v = op_version(node.op_type, opset)
    if not spec.since <= v <= spec.until:
        raise XferError(f"{node_label(node)}: op version {v} (opset {opset}) is not supported; "
                        f"the converter handles versions {spec.since}-{spec.until}")
    return spec


def convert_node(node, opset: int):
    return spec_for(node, opset).fn(node, attributes(node), opset)


def model_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _covered(node, opset: int) -> bool:
    spec = REGISTRY.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    return spec is None or spec.since <= op_version(node.op_type, opset) <= spec.until


def upgrade(model, newest: int = 21):
    """``model`` brought to the lowest opset whose op versions every converter implements.

    Files from old converters and model zoos (opset 6 to 9) use op versions the
    converters were not written against (``Add`` with ``broadcast``,
    ``BatchNormalization`` with ``spatial``); ``onnx.version_converter``
    rewrites them. A model already covered is returned as it is; an op with no
    converter is left for ``spec_for`` to name.
    """
    opset = model_opset(model)
    nodes = list(model.graph.node)
    if all(_covered(n, opset) for n in nodes):
        return model
    target = next((t for t in range(opset + 1, newest + 1) if all(_covered(n, t) for n in nodes)), None)
    if target is None:
        return model
    import onnx.version_converter

    try:
        return onnx.version_converter.convert_version(model, target)
    except Exception as e:  # the converter raises RuntimeError / ConvertError with C++ messages
        raise XferError(f"model at opset {opset}: cannot convert it to opset {target} "
                        f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})") from None
