"""Shape and layout ops: Flatten, Reshape, Concat, Transpose, Squeeze, Unsqueeze, Shape, Gather, Slice, Pad, Constant.

These are the ops exporters use to compute shapes at run time (PyTorch's
dynamic flatten is Shape -> Gather -> Unsqueeze -> Concat -> Reshape), so each
follows ONNX's index rules exactly: negative axes, clamped slice bounds,
negative steps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from xfer.importer.ops.common import Lambda, ints, torch_pad, unsupported
from xfer.importer.registry import ANY, register


def _flatten(x, axis: int):
    ax = axis % x.dim() if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))  # no -1: an empty batch stays (0, k)


@register("Flatten", until=25, types=ANY)
def flatten(node, a, opset):
    return Lambda("Flatten", _flatten, axis=a.get("axis", 1))


def _reshape(x, shape, allowzero: int = 0):
    target = ints(shape)
    if not allowzero:
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


@register("Reshape", until=25, types=ANY)
def reshape(node, a, opset):
    if "shape" in a:  # opset < 5
        return Lambda("Reshape", _reshape, shape=torch.tensor(a["shape"]))
    return Lambda("Reshape", _reshape, allowzero=a.get("allowzero", 0))


def _concat(*xs, axis: int):
    return torch.cat(xs, dim=axis)


@register("Concat", until=13, types=ANY)
def concat(node, a, opset):
    return Lambda("Concat", _concat, axis=a.get("axis", 1))


def _transpose(x, perm):
    return x.permute(perm if perm is not None else list(reversed(range(x.dim()))))


@register("Transpose", until=25, types=ANY)
def transpose(node, a, opset):
    return Lambda("Transpose", _transpose, perm=a.get("perm"))


def _squeeze(x, axes=None, attr_axes=None):
    axes = ints(axes) if axes is not None else attr_axes
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = sorted(ax % x.dim() for ax in axes)
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


def _unsqueeze(x, axes=None, attr_axes=None):
    axes = ints(axes) if axes is not None else list(attr_axes)
    rank = x.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


@register("Squeeze", until=25, types=ANY)
def squeeze(node, a, opset):
    return Lambda("Squeeze", _squeeze, attr_axes=a.get("axes"))


@register("Unsqueeze", until=25, types=ANY)
def unsqueeze(node, a, opset):
    if opset < 13 and "axes" not in a:
        raise unsupported(node, "Unsqueeze without axes")
    return Lambda("Unsqueeze", _unsqueeze, attr_axes=a.get("axes"))


def _shape(x, start: int, end: int | None):
    return torch.tensor(list(x.shape)[slice(start, end)], dtype=torch.int64)


@register("Shape", until=25, types=ANY)
def shape(node, a, opset):
    return Lambda("Shape", _shape, start=int(a.get("start", 0)), end=a.get("end"))


def _gather(x, idx, axis: int):
    axis = axis % x.dim()
    n = x.shape[axis]
    flat = idx.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < -n or int(flat.max()) >= n):
        raise IndexError(f"Gather index out of range [-{n}, {n - 1}]")
    flat = torch.where(flat < 0, flat + n, flat)
    y = torch.index_select(x, axis, flat)
    return y.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@register("Gather", until=13, types=ANY)
def gather(node, a, opset):
    return Lambda("Gather", _gather, axis=int(a.get("axis", 0)))


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ValueError("Slice step must not be 0")
        ax = ax % x.dim()  # noqa: PLW2901  (the axis, made non-negative)
        index = range(x.shape[ax])[slice(s, e, st)]  # Python's clamping is ONNX's
        if st > 0:
            x = x.narrow(ax, index.start, len(index)) if st == 1 else x[(slice(None),) * ax + (slice(index.start, index.stop, st),)]
        else:
            x = torch.index_select(x, ax, torch.tensor(list(index), dtype=torch.long))
    return x


@register("Slice", until=13, types=ANY)
def slice_(node, a, opset):
    if opset < 10:
        return Lambda("Slice", lambda x: _slice(x, torch.tensor(a["starts"]), torch.tensor(a["ends"]),
                                                torch.tensor(a["axes"]) if "axes" in a else None))
    return Lambda("Slice", _slice)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(x, pads, value=None, axes=None, mode: str = "constant"):
    pads = ints(pads)
    nd = x.dim()
    axes = [ax % nd for ax in ints(axes)] if axes is not None else list(range(nd))
    full = [0] * (2 * nd)
    for i, ax in enumerate(axes):
        full[ax], full[ax + nd] = pads[i], pads[i + len(axes)]
    if mode == "constant":
        v = 0.0 if value is None or value.numel() == 0 else value.reshape(-1)[0].item()
        return F.pad(x, torch_pad(full, nd), mode="constant", value=v)
    first = next((i for i in range(nd) if full[i] or full[i + nd]), nd)
    moved = nd - first  # F.pad pads only the trailing 1-3 dims in the other modes
    if moved == 0:
        return x
    if moved > 3 or any(p < 0 for p in full):
        raise ValueError(f"Pad mode '{mode}' on {moved} leading dims or with negative pads")
    lead = list(x.shape[:first])
    y = x.reshape([1, int(np.prod(lead)) if lead else 1] + list(x.shape[first:]))
    if not y.dtype.is_floating_point:
        y = y.double()
    y = F.pad(y, torch_pad(full[first:nd] + full[nd + first:], moved), mode=_PAD_MODES[mode])
    return y.reshape(lead + list(y.shape[2:])).to(x.dtype)


@register("Pad", since=2, until=25, types=ANY)
def pad(node, a, opset):
    mode = a.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise unsupported(node, f"Pad mode '{mode}'")
    if opset < 11:
        pads, value = torch.tensor(a["pads"]), torch.tensor(float(a.get("value", 0.0)))
        return Lambda("Pad", lambda x: _pad(x, pads, value, None, mode))
    return Lambda("Pad", _pad, mode=mode)


class Constant(nn.Module):
    """A Constant node: its value is a buffer (state, not a trainable parameter)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self):
        return self.value


def constant_value(node, a) -> np.ndarray:
    """The value of a Constant node, whichever attribute holds it."""
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    if "value_float" in a:
        return np.array(a["value_float"], np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], np.int64)
    kind = next(iter(a), "no value")
    raise unsupported(node, f"a Constant holding {kind}")


@register("Constant", until=25, types=ANY)
def constant(node, a, opset):
    value = constant_value(node, a)
    if value.dtype.kind not in "fiub" or value.dtype in (np.uint16, np.uint32, np.uint64):
        raise unsupported(node, f"a Constant of type {value.dtype}")
    return Constant(torch.from_numpy(np.array(value, copy=True)))

