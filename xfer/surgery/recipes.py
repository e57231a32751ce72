"""A transfer mode's ``Recipe`` (``xfer.config.RECIPES``) carried out as a sequence of surgery passes.

The recipe says what to do, never which mode it is: ``head`` ``retarget``
re-creates the first conv (new input), the first FC when its width changes
and the last FC (new classes); ``replace`` puts a new MLP head under the
feature extractor; ``body`` ``fresh`` re-initialises every remaining layer;
``trains`` ``new`` freezes everything surgery did not re-create.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from xfer.config import DEFAULT_HEAD, Recipe, recipe
from xfer.errors import XferError
from xfer.graph import finalize, simplify
from xfer.meta import read_meta, write_meta
from xfer.surgery import init
from xfer.surgery.canon import canonical_head, canonical_input, fold_constants
from xfer.surgery.cut import activation_of, dense_layers, feature_nodes, find_boundary, first_conv
from xfer.surgery.freeze import set_frozen
from xfer.surgery.head import _set_output_classes, reinit_dense, replace_head
from xfer.surgery.inputs import retarget_input
from xfer.surgery.verify import check_trains
from xfer.surgery.view import View

if TYPE_CHECKING:
    import onnx


def _reinit_conv(v: View, node: onnx.NodeProto, activation: str, seed: int) -> list[str]:
    inits = v.inits
    w = inits[node.input[1]]
    fan_in = int(np.prod(w.shape[1:]))
    fan_out = int(w.shape[0] * np.prod(w.shape[2:]))
    v.set_init(node.input[1], init.weight(w.shape, fan_in, fan_out, activation, init.rng_for(seed, node.input[1])))
    names = [node.input[1]]
    if len(node.input) > 2 and node.input[2] in inits:
        v.set_init(node.input[2], np.zeros(w.shape[0], np.float32))
        names.append(node.input[2])
    return names


def _reset_batchnorm(v: View, node: onnx.NodeProto) -> None:
    """A fresh BatchNormalization: scale 1, shift 0, running mean 0, running variance 1."""
    inits = v.inits
    for name, value in zip(node.input[1:5], (1.0, 0.0, 0.0, 1.0)):
        if name in inits:
            v.set_init(name, np.full(inits[name].shape, value, inits[name].dtype))


def _dense_names(d) -> list[str]:
    return [d.weight] + ([d.bias] if d.bias else [])


def _flat_width(v: View, boundary) -> int:
    s = v.shape(boundary.features)
    if not s or any(v is None for v in s[1:]):
        raise XferError(f"cannot infer the feature map shape at '{boundary.features}' for this input size")
    if min(s[1:]) < 1:
        raise XferError(f"input too small: the feature map at '{boundary.features}' would be {s[1:]}")
    return int(np.prod(s[1:]))


def _fc_in_width(v: View, d) -> int:
    w = v.inits[d.weight]
    return int(w.shape[1] if d.trans_b else w.shape[0])


def _retarget(m: View, b, act: str, n_classes: int, seed: int) -> set[str]:
    """Re-create the layers whose shapes change: first conv, first FC (when its width changes), last FC."""
    layers = dense_layers(m, b)
    if len(layers) < 1:
        raise XferError("the source head has no fully-connected layer to retarget")
    trainable = set(_reinit_conv(m, first_conv(m), act, seed))
    width = _flat_width(m, b)
    if _fc_in_width(m, layers[0]) != width:
        reinit_dense(m, layers[0], in_features=width, activation=act if len(layers) > 1 else "Identity", seed=seed)
        trainable.update(_dense_names(layers[0]))
    reinit_dense(m, layers[-1], out_features=n_classes, activation="Identity", seed=seed)
    trainable.update(_dense_names(layers[-1]))
    _set_output_classes(m, n_classes)
    return trainable


def _refresh_body(m: View, b, act: str, seed: int) -> set[str]:
    """Every conv and FC of the (retargeted) source re-initialised, every BatchNorm reset."""
    trainable: set[str] = set()
    for n in m.graph.node:
        if n.op_type == "Conv":
            trainable.update(_reinit_conv(m, n, act, seed))
        elif n.op_type == "BatchNormalization":
            _reset_batchnorm(m, n)
    layers = dense_layers(m, b)
    for i, d in enumerate(layers):
        reinit_dense(m, d, activation=act if i < len(layers) - 1 else "Identity", seed=seed)
        trainable.update(_dense_names(d))
    return trainable


def _rewrite(m: View, r: Recipe, b, n_classes: int, head: tuple[int, ...], seed: int) -> set[str]:
    """Carry out ``r`` on the canonical graph ``m``; returns the initializers surgery re-created."""
    act = activation_of(b)
    if r.head == "retarget":
        trainable = _retarget(m, b, act, n_classes, seed)
    else:
        _flat_width(m, b)
        feature_inits = {i for n in feature_nodes(m, b) for i in n.input} & set(m.inits)
        replace_head(m, tuple(head), n_classes, act, seed)
        trainable = set(m.inits) - feature_inits
    if r.body == "fresh":
        trainable |= _refresh_body(m, find_boundary(m), act, seed)
    return trainable


def _canonical(source, channels: int, size: tuple[int, int], adapt: str) -> View:
    """The source in canonical form at the new input, as one view every later pass shares."""
    m = copy.deepcopy(source)
    simplify(m)
    v = View(m)
    fold_constants(v)
    canonical_input(v)
    canonical_head(v)
    retarget_input(v, channels, size, adapt)
    return v


def apply(mode: str, source: onnx.ModelProto, classes: list[str], channels: int = 1, size: tuple[int, int] = (32, 32),
          head: tuple[int, ...] = DEFAULT_HEAD, train_all: bool = False, seed: int = 0,
          adapt: str = "average") -> onnx.ModelProto:
    """Rewrite ``source`` (an ``onnx.ModelProto``) for ``mode``; returns a new, checked model."""
    r = recipe(mode)
    if len(classes) < 2:
        raise XferError(f"need at least 2 classes, got {len(classes)}")
    src_meta = read_meta(source)
    v = _canonical(source, channels, size, adapt)
    trainable = _rewrite(v, r, find_boundary(v), len(classes), head, seed)
    m = finalize(v.model)
    native = v.source_input
    try:
        check_trains(m, channels, size, len(classes))
    except XferError as e:
        if all(native) and tuple(native[1:]) != tuple(size):
            raise XferError(f"{e} (the source takes {'x'.join(map(str, native))}: a size that only its own input "
                            "size gives, such as a transformer's patch grid, is fixed in its graph)") from None
        raise
    all_inits = {t.name for t in m.graph.initializer}
    frozen = set() if (r.trains == "all" or train_all) else all_inits - trainable
    set_frozen(m, frozen)
    write_meta(m, mode=mode, classes=list(classes), input_shape=[channels, *size],
               transfer_from=src_meta.source or "unknown", head=list(head) if r.uses_head_widths else [],
               init_seed=seed, train_all=bool(train_all), mean=src_meta.mean or [0.0], std=src_meta.std or [1.0])
    m.graph.name = f"{m.graph.name}-{mode}"
    return m
