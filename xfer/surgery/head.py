"""New classifier layers: re-create one dense layer, or replace the whole FC block by a new MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from xfer.errors import XferError
from xfer.surgery import init
from xfer.surgery.canon import canonical_head
from xfer.surgery.cut import Dense, activation_of, downstream, find_boundary
from xfer.surgery.view import View, view_of

if TYPE_CHECKING:
    import onnx


def _set_output_classes(model: onnx.ModelProto | View, classes: int) -> None:
    v = view_of(model)
    dims = v.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2:
        dims[1].Clear()
        dims[1].dim_value = classes
        v.changed()


def reinit_dense(model: onnx.ModelProto | View, layer: Dense, in_features: int | None = None,
                 out_features: int | None = None, activation: str = "Relu", seed: int = 0) -> None:
    """Give ``layer`` fresh weights, optionally with a new input or output width."""
    v = view_of(model)
    w = v.inits[layer.weight]
    fin, fout = (w.shape[1], w.shape[0]) if layer.trans_b else (w.shape[0], w.shape[1])
    fin, fout = in_features or fin, out_features or fout
    shape = (fout, fin) if layer.trans_b else (fin, fout)
    v.set_init(layer.weight, init.weight(shape, fin, fout, activation, init.rng_for(seed, layer.weight)))
    if layer.bias is not None:
        v.set_init(layer.bias, np.zeros(fout, np.float32))


def replace_head(model: onnx.ModelProto | View, widths: tuple[int, ...], classes: int, activation: str | None = None,
                 seed: int = 0) -> list[str]:
    """Replace every node after xfer's flatten by Gemm layers of ``widths`` + a ``classes``-way output.

    The activation follows the source head's family unless given. Returns the
    names of the new initializers.
    """
    if classes < 1 or any(w < 1 for w in widths):
        raise XferError(f"head widths and class count must be positive, got {list(widths)} and {classes}")
    v = view_of(model)
    g = v.graph
    canonical_head(v)
    b = find_boundary(v)
    act = activation or activation_of(b)
    out_name = g.output[0].name
    flat = v.shape(b.flat)
    if not flat or flat[-1] is None:
        raise XferError(f"cannot infer the flattened width at '{b.flat}'")
    for n in downstream(v, b.flat):
        g.node.remove(n)
    v.changed()
    names = []
    prev, fin = b.flat, int(flat[-1])
    sizes = list(widths) + [classes]
    for i, fout in enumerate(sizes):
        last = i == len(sizes) - 1
        wn, bn = f"head_fc{i + 1}_weight", f"head_fc{i + 1}_bias"
        y = out_name if last else f"head_fc{i + 1}"
        v.append(helper.make_node("Gemm", [prev, wn, bn], [y], name=f"head_fc{i + 1}", transB=1))
        a = "Identity" if last else act
        v.set_init(wn, init.weight((fout, fin), fin, fout, a, init.rng_for(seed, wn)))
        v.set_init(bn, np.zeros(fout, np.float32))
        names += [wn, bn]
        if not last:
            v.append(helper.make_node(act, [y], [y + "_act"], name=f"head_act{i + 1}"))
            prev = y + "_act"
        fin = fout
    _set_output_classes(v, classes)
    return names
