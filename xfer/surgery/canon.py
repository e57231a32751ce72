"""Canonical form for any ONNX CNN before the transfer passes run.

Third-party CNNs come with a fixed batch of 1, NHWC inputs, weights computed
from constants, reshapes whose target shapes hard-code the source geometry,
classifiers that are 1x1 convolutions, global pools written as fixed-kernel
pools and a softmax at the end. These passes rewrite each into the one shape
the rest of surgery works on:

    input (N, C, H, W) -> body -> features -> [global pool] -> Flatten -> dense layers -> logits

where the features are the body's last feature map (a CNN) or its last feature
vector (a transformer's class token after the final norm, a pooled and
normalised vector), which xfer's Flatten passes through.

so that a model rewritten for any input size still runs, at any batch size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from xfer.errors import XferError
from xfer.surgery.cut import FLATTEN_OPS, GLOBAL_POOLS, HEAD_ACTIVATIONS, PASS_THROUGH, PROBABILITIES, find_boundary, global_pool_of
from xfer.surgery.view import View, view_of

if TYPE_CHECKING:
    import onnx

FOLDABLE = ("Reshape", "Unsqueeze", "Squeeze", "Transpose", "Identity", "Constant")


def _attr(node, name: str, default=None):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def _fold(node, args: list[np.ndarray]) -> np.ndarray | None:
    op = node.op_type
    if op == "Constant":
        from onnx import numpy_helper

        t = _attr(node, "value")
        return None if t is None else numpy_helper.to_array(t)
    x = args[0]
    if op == "Identity":
        return x
    if op == "Transpose":
        return np.transpose(x, _attr(node, "perm"))
    if op == "Reshape":
        target = [int(v) for v in args[1]]
        return x.reshape([x.shape[i] if v == 0 else v for i, v in enumerate(target)])
    axes = [int(v) for v in args[1]] if len(args) > 1 else _attr(node, "axes")
    if op == "Squeeze":
        return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
    rank = x.ndim + len(axes)
    for ax in sorted(a % rank for a in axes):
        x = np.expand_dims(x, ax)
    return x


def fold_constants(model: onnx.ModelProto | View) -> None:
    """Replace layout ops whose inputs are all constants by initializers (weights computed from weights)."""
    v = view_of(model)
    g = v.graph
    inits = v.inits
    outputs = {o.name for o in g.output}
    for n in list(g.node):
        if n.op_type not in FOLDABLE or any(o in outputs for o in n.output):
            continue
        if not all(i in inits for i in n.input if i):
            continue
        value = _fold(n, [inits[i] for i in n.input if i])
        if value is None:
            continue
        v.set_init(n.output[0], np.ascontiguousarray(value).reshape(np.shape(value)))  # 0-d stays 0-d
        inits[n.output[0]] = value
        g.node.remove(n)
    v.cleanup()


def _set_dim(dim, value) -> None:
    dim.Clear()
    if isinstance(value, str):
        dim.dim_param = value
    else:
        dim.dim_value = int(value)


def _is_noop_reshape(node, dims, inits) -> bool:
    """A Reshape of the input to the input's own shape (any batch): what tf2onnx leaves of NCHW -> NHWC -> NCHW."""
    if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    target = [int(t) for t in inits[node.input[1]].reshape(-1)]
    own = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return len(target) == 4 and target[0] in (-1, 0) and None not in own[1:] and target[1:] == own[1:]


def canonical_input(model: onnx.ModelProto | View) -> None:
    """NHWC inputs (read through a Transpose to NCHW) become NCHW; batch dims become symbolic.

    The source's fixed batch (None where it was symbolic) stays in the view's ``source_batch``.
    """
    v = view_of(model)
    model, g = v.model, v.graph
    init_names = {t.name for t in g.initializer}
    real = [i for i in g.input if i.name not in init_names]
    if len(real) != 1:
        raise XferError(f"expected a model with one input, got {len(real)}")
    if len(g.input) != 1:  # IR 3 listed initializers as inputs too
        del g.input[:]
        g.input.extend(real)
        model.ir_version = max(model.ir_version, 4)
    inp = g.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise XferError(f"expected an image input of rank 4, got rank {len(dims)}")
    readers = v.consumers.get(inp.name, [])
    if len(readers) == 1 and _is_noop_reshape(readers[0], dims, v.inits):  # tf2onnx's NCHW round trip for 1 channel
        v.rewire(readers[0].output[0], inp.name)
        v.remove(readers[0])
        readers = v.consumers.get(inp.name, [])
    if len(readers) == 1 and readers[0].op_type == "Transpose" and list(_attr(readers[0], "perm", [])) == [0, 3, 1, 2]:
        t = readers[0]
        v.rewire(t.output[0], inp.name)
        v.remove(t)
        old = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        for d, value in zip(dims, (old[0], old[3], old[1], old[2])):
            _set_dim(d, value)
        src = v.source_shapes.get(inp.name)
        if src and len(src) == 4:  # the source's geometry, read as NCHW from here on
            v.source_shapes[inp.name] = [src[0], src[3], src[1], src[2]]
        if len(v.source_input) == 3:
            h, w, c = v.source_input
            v.source_input = [c, h, w]
    _set_dim(dims[0], "N")
    for o in g.output:
        if o.type.tensor_type.HasField("shape") and len(o.type.tensor_type.shape.dim):
            _set_dim(o.type.tensor_type.shape.dim[0], "N")
    del g.value_info[:]
    v.changed()


def _global_pool_in_disguise(node, sh: dict, inits) -> str | None:
    """An AveragePool/MaxPool whose window covers its whole input, or a ReduceMean/ReduceMax over the spatial
    axes: a global pool at any input size."""
    src = sh.get(node.input[0]) if node.input else None
    if node.op_type in ("ReduceMean", "ReduceMax"):
        return global_pool_of(node, inits, len(src) if src else None)
    if node.op_type not in ("AveragePool", "MaxPool"):
        return None
    src, out = sh.get(node.input[0]), sh.get(node.output[0])
    k = _attr(node, "kernel_shape")
    if not src or not out or None in src[2:] or len(out) < 3 or any(v != 1 for v in out[2:]):
        return None
    if any(kk < s for kk, s in zip(k, src[2:])):
        return None
    return "GlobalAveragePool" if node.op_type == "AveragePool" else "GlobalMaxPool"


def canonical_head(model: onnx.ModelProto | View) -> None:
    """features -> [global pool] -> xfer's Flatten -> the source's dense layers -> logits (no softmax)."""
    v = view_of(model)
    g = v.graph
    b = find_boundary(v)
    if b.flatten is not None and b.flatten.name == "xfer_flatten":
        return
    sh, inits = v.shapes, v.inits
    pooled = v.producers.get(b.features)
    disguise = _global_pool_in_disguise(pooled, sh, inits) if pooled is not None else None
    if disguise and pooled is not None:
        new = helper.make_node(disguise, [pooled.input[0]], [pooled.output[0]], name=pooled.name or pooled.output[0])
        v.replace(pooled, new)
    feat = sh.get(b.features) if not disguise else [None] * 4
    if feat is not None and len(feat) not in (2, 3, 4, 5):
        raise XferError(f"graph '{g.name}': the classifier reads '{b.features}' of rank {len(feat)}, "
                        "neither a feature map nor a feature vector")
    clf = b.classifier
    x = b.features
    if b.pool:
        v.append(helper.make_node(b.pool, [x], ["xfer_pooled"], name="xfer_pool"))
        x = "xfer_pooled"
    v.append(helper.make_node("Flatten", [x], ["xfer_flat"], name="xfer_flatten", axis=1))
    if clf.op_type == "Conv":
        # A 1x1 conv after the pool is the same dense layer; a k x k one's pooled output is its kernel's sum applied
        # to the pooled map up to the borders. Every mode re-creates the output layer, so only its shape matters.
        w = inits[clf.input[1]]
        dense = w.reshape(w.shape[0], -1) if w.shape[2:] == (1, 1) else w.sum(axis=(2, 3))
        v.set_init(clf.input[1], np.ascontiguousarray(dense))
        bias = [clf.input[2]] if len(clf.input) > 2 and clf.input[2] else []
        gemm = helper.make_node("Gemm", ["xfer_flat", clf.input[1]] + bias, [clf.output[0]],
                                name=clf.name or clf.output[0], transB=1)
        v.replace(clf, gemm)
    else:
        clf.input[0] = "xfer_flat"
        v.changed()
    _drop_tail(v)
    o = g.output[0].type.tensor_type
    o.ClearField("shape")
    o.shape.dim.add().dim_param = "N"
    o.shape.dim.add()
    v.sort()
    v.cleanup()


def _drop_tail(v: View) -> None:
    """Remove what follows the last dense layer (softmax, activations, pools, reshapes): the head emits logits."""
    g = v.graph
    prod = v.producers
    out = g.output[0].name
    inert = PROBABILITIES + HEAD_ACTIVATIONS + PASS_THROUGH + FLATTEN_OPS + GLOBAL_POOLS
    t, dropped = out, []
    while t in prod and prod[t].op_type in inert and prod[t].name != "xfer_flatten":
        dropped.append(prod[t])
        t = prod[t].input[0]
    if not dropped:
        return
    last = prod[t]
    for n in dropped:
        g.node.remove(n)
    last.output[:] = [out if o == t else o for o in last.output]
    v.changed()
    v.rewire(t, out)


def retarget_reshapes(model: onnx.ModelProto | View) -> None:
    """Rewrite body Reshapes whose constant target hard-codes the batch or the source's spatial size.

    The batch entry becomes 0 (copy the input's batch); trailing entries equal
    to the input's trailing spatial dims follow the new geometry (ShuffleNet's
    channel shuffle reshapes N x C x H x W to N x g x C/g x H x W). What the
    source's geometry was comes from the view, taken before any pass changed it.
    """
    v = view_of(model)
    g, inits, batch = v.graph, v.inits, v.source_batch
    fixed = [n for n in g.node if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in inits]
    if not fixed:
        return
    head = {id(n) for n in find_boundary(v).head}
    for n in fixed:
        if id(n) in head:
            continue
        src = v.source_shapes.get(n.input[0]) or []
        target = [int(x) for x in inits[n.input[1]]]
        if not src or None in src[1:] or len(target) < 2:
            continue
        new = list(target)
        if batch is not None and target[0] == batch:
            new[0] = 0
        if len(src) > 2 and target[-1] == src[-1]:
            now = v.shapes.get(n.input[0])
            j = 1
            while j < len(target) and j <= len(src) - 2 and target[-j] == src[-j] and now and now[-j] is not None:
                new[-j] = now[-j]
                j += 1
        if new != target:
            name = f"{n.name or n.output[0]}_xfer_shape"
            v.set_init(name, np.array(new, np.int64))
            n.input[1] = name
            v.changed()
    v.cleanup()
