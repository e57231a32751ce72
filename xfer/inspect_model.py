"""``xfer inspect``: what is inside an ONNX model, layer by layer, and what xfer recorded about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xfer.config import InspectConfig
from xfer.graph import initializers, load_model, shapes
from xfer.meta import meta_dict, read_meta
from xfer.records import Record

if TYPE_CHECKING:
    import onnx

Shape = list[Any] | None  # dims as ints, names (a dynamic batch) or None where unknown; None when not inferred


@dataclass
class Layer(Record):
    name: str
    op: str
    output_shape: Shape
    params: int
    frozen: bool


@dataclass
class ModelSummary(Record):
    """A model at a glance: nodes with output shapes and parameter counts, totals, xfer's metadata."""

    OMIT_NONE = False

    opset: int
    inputs: dict[str, Shape]
    layers: list[Layer]
    params: int
    frozen_params: int
    trainable_params: int
    metadata: dict[str, Any]


def describe(model: onnx.ModelProto) -> ModelSummary:
    inits = initializers(model)
    sh = shapes(model)
    meta = read_meta(model)
    frozen = set(meta.frozen or [])
    layers = []
    for n in model.graph.node:
        params = [i for i in n.input if i in inits]
        layers.append(Layer(n.name or n.output[0], n.op_type, sh.get(n.output[0]), int(sum(inits[p].size for p in params)),
                            bool(params) and all(p in frozen for p in params)))
    total = int(sum(a.size for a in inits.values()))
    n_frozen = int(sum(a.size for k, a in inits.items() if k in frozen))
    io_shapes = {v.name: sh.get(v.name) for v in list(model.graph.input) + list(model.graph.output)}
    return ModelSummary(model.opset_import[0].version, io_shapes, layers, total, n_frozen, total - n_frozen,
                        meta_dict(meta))


def main(args: InspectConfig) -> ModelSummary:
    return describe(load_model(args.model))
