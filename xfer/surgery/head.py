"""New classifier layers: re-create one dense layer, or replace the whole FC block by a new MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from xfer.errors import XferError
from xfer.graph import initializers, set_initializer, tensor_shape
from xfer.surgery import init
from xfer.surgery.canon import canonical_head
from xfer.surgery.cut import Dense, activation_of, downstream, find_boundary

if TYPE_CHECKING:
    import onnx


def _set_output_classes(model: onnx.ModelProto, classes: int) -> None:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2:
        dims[1].Clear()
        dims[1].dim_value = classes


def reinit_dense(model: onnx.ModelProto, layer: Dense, in_features: int | None = None, out_features: int | None = None,
                 activation: str = "Relu", seed: int = 0) -> None:
    """Give ``layer`` fresh weights, optionally with a new input or output width."""
    w = initializers(model)[layer.weight]
    fin, fout = (w.shape[1], w.shape[0]) if layer.trans_b else (w.shape[0], w.shape[1])
    fin, fout = in_features or fin, out_features or fout
    shape = (fout, fin) if layer.trans_b else (fin, fout)
    set_initializer(model, layer.weight, init.weight(shape, fin, fout, activation, init.rng_for(seed, layer.weight)))
    if layer.bias is not None:
        set_initializer(model, layer.bias, np.zeros(fout, np.float32))


def replace_head(model: onnx.ModelProto, widths: tuple[int, ...], classes: int, activation: str | None = None,
                 seed: int = 0) -> list[str]:
    """Replace every node after xfer's flatten by Gemm layers of ``widths`` + a ``classes``-way output.

    The activation follows the source head's family unless given. Returns the
    names of the new initializers.
    """
    if classes < 1 or any(w < 1 for w in widths):
        raise XferError(f"head widths and class count must be positive, got {list(widths)} and {classes}")
    g = model.graph
    canonical_head(model)
    b = find_boundary(model)
    act = activation or activation_of(b)
    out_name = g.output[0].name
    flat = tensor_shape(model, b.flat)
    if not flat or flat[-1] is None:
        raise XferError(f"cannot infer the flattened width at '{b.flat}'")
    for n in downstream(g, b.flat):
        g.node.remove(n)
    names = []
    prev, fin = b.flat, int(flat[-1])
    sizes = list(widths) + [classes]
    for i, fout in enumerate(sizes):
        last = i == len(sizes) - 1
        wn, bn = f"head_fc{i + 1}_weight", f"head_fc{i + 1}_bias"
        y = out_name if last else f"head_fc{i + 1}"
        g.node.append(helper.make_node("Gemm", [prev, wn, bn], [y], name=f"head_fc{i + 1}", transB=1))
        a = "Identity" if last else act
        set_initializer(model, wn, init.weight((fout, fin), fin, fout, a, init.rng_for(seed, wn)))
        set_initializer(model, bn, np.zeros(fout, np.float32))
        names += [wn, bn]
        if not last:
            g.node.append(helper.make_node(act, [y], [y + "_act"], name=f"head_act{i + 1}"))
            prev = y + "_act"
        fin = fout
    _set_output_classes(model, classes)
    return names
