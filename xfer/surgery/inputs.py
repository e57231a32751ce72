"""Retarget a model's input to the target data: channel count and spatial size.

The first convolution keeps working when the channel count changes: its
weights are averaged (responses to gray-like input preserved) or replicated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xfer.errors import XferError
from xfer.graph import initializers, set_initializer
from xfer.surgery.cut import first_conv

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


def retarget_input(model: onnx.ModelProto, channels: int, size: tuple[int, int], adapt: str = "average") -> None:
    """Set the input to (N, channels, H, W) and adapt the first convolution's weights."""
    if channels < 1:
        raise XferError(f"input channels must be >= 1, got {channels}")
    if len(size) != 2 or min(size) < 1:
        raise XferError(f"--input-size must be positive, got {size}")
    g = model.graph
    if len(g.input) != 1:
        raise XferError(f"expected a model with one input, got {len(g.input)}")
    dims = g.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise XferError(f"expected an NCHW image input, got rank {len(dims)}")
    for d, v in zip(list(dims)[1:], (channels, *size)):
        d.Clear()
        d.dim_value = int(v)
    conv = first_conv(model)
    w = initializers(model)[conv.input[1]]
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group != 1 and w.shape[1] != channels:
        raise XferError(f"node '{conv.name or conv.output[0]}': cannot change channels of a grouped first conv")
    set_initializer(model, conv.input[1], adapt_channels(w, channels, adapt))
    del g.value_info[:]
