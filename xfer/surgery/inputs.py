"""Retarget a model's input to the target data: channel count and spatial size.

The first convolution keeps working when the channel count changes: its
weights are averaged (responses to gray-like input preserved) or replicated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xfer.errors import XferError
from xfer.surgery.canon import retarget_reshapes
from xfer.surgery.cut import first_conv, input_steps
from xfer.surgery.view import View, view_of

if TYPE_CHECKING:
    import onnx


def adapt_channels(w: np.ndarray, channels: int, how: str = "average") -> np.ndarray:
    """(O, Cin, kh, kw) -> (O, channels, kh, kw)."""
    cin = w.shape[1]
    if channels == cin:
        return w
    if how == "average":
        mean = w.mean(axis=1, keepdims=True) * (cin / channels)
        return np.repeat(mean, channels, axis=1).astype(w.dtype)
    if how == "replicate":
        idx = np.arange(channels) % cin
        return w[:, idx].astype(w.dtype)
    raise XferError(f"channel adaptation must be 'average' or 'replicate', got '{how}'")


def _average_input_scalings(v: View, conv: onnx.NodeProto, old: int, channels: int) -> None:
    """A per-channel normalisation the model carries before its first conv (Keras Rescaling/Normalization), averaged
    over the channels when their number changes: one gray channel gets the mean of the RGB constants."""
    if old == channels:
        return
    for node in input_steps(v, conv) or []:
        for name in node.input:
            c = v.inits.get(name)
            if c is not None and c.size == old and old > 1:
                axis = next(a for a, d in enumerate(c.shape) if d == old)
                v.set_init(name, np.ascontiguousarray(c.mean(axis=axis, keepdims=True)))


def retarget_input(model: onnx.ModelProto | View, channels: int, size: tuple[int, int], adapt: str = "average") -> None:
    """Set the input to (N, channels, H, W), adapt the first convolution's weights, and let the body's reshapes
    that hard-code the source's geometry follow the new one."""
    if channels < 1:
        raise XferError(f"input channels must be >= 1, got {channels}")
    if len(size) != 2 or min(size) < 1:
        raise XferError(f"--input-size must be positive, got {size}")
    v = view_of(model)
    g = v.graph
    if len(g.input) != 1:
        raise XferError(f"expected a model with one input, got {len(g.input)}")
    dims = g.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise XferError(f"expected an NCHW image input, got rank {len(dims)}")
    for d, value in zip(list(dims)[1:], (channels, *size)):
        d.Clear()
        d.dim_value = int(value)
    v.changed()
    conv = first_conv(v)
    w = v.inits[conv.input[1]]
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group != 1 and w.shape[1] != channels:
        raise XferError(f"node '{conv.name or conv.output[0]}': cannot change channels of a grouped first conv")
    del g.value_info[:]
    _average_input_scalings(v, conv, w.shape[1], channels)
    v.set_init(conv.input[1], adapt_channels(w, channels, adapt))
    retarget_reshapes(v)
