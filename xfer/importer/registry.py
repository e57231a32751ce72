"""The converter registry: ONNX op type -> a function building a small ``torch.nn.Module`` for one node.

Each converter receives the node's attributes (decoded) and the model's opset
and returns a module whose ``forward`` takes the node's inputs in ONNX order
(initializers arrive as parameters, like any other input).
"""

from __future__ import annotations

from typing import Any, Callable

from onnx import helper

from xfer.errors import XferError

Converter = Callable[[Any, dict[str, Any], int], Any]
CONVERTERS: dict[str, Converter] = {}


def register(*op_types: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = fn
        return fn

    return deco


def attributes(node) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def convert_node(node, opset: int):
    fn = CONVERTERS.get(node.op_type)
    if fn is None or (node.domain not in ("", "ai.onnx")):
        supported = ", ".join(sorted(CONVERTERS))
        raise XferError(f"node '{node.name or node.output[0]}': unsupported ONNX op {node.domain + '.' if node.domain else ''}"
                        f"{node.op_type} (supported: {supported})")
    return fn(node, attributes(node), opset)
