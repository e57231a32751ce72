"""Reductions: the Reduce* family, ArgMax/ArgMin and CumSum.

ONNX moved ``axes`` from an attribute to an input (ReduceSum at version 13,
the rest at 18) and added ``noop_with_empty_axes``; one function serves every
version. Integer sums keep their element type (torch widens them to int64),
and the max/min of an empty set is the type's lowest/highest value, as ONNX
specifies.
"""

from __future__ import annotations

import torch

from xfer.importer.ops.common import Lambda, ints
from xfer.importer.registry import FLOATS, NUMERIC, register


def _mean(x, dims, keep):
    return x.mean(dim=dims, keepdim=keep)


def _sum(x, dims, keep):
    return x.sum(dim=dims, keepdim=keep, dtype=x.dtype)


def _prod(x, dims, keep):
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep, dtype=x.dtype)
    return x


def _extreme(x, dims, keep, largest: bool):
    if any(x.shape[d] == 0 for d in dims):
        shape = [1 if d in dims else s for d, s in enumerate(x.shape)] if keep else \
            [s for d, s in enumerate(x.shape) if d not in dims]
        info = torch.finfo(x.dtype) if x.dtype.is_floating_point else torch.iinfo(x.dtype)
        fill = (-torch.inf if largest else torch.inf) if x.dtype.is_floating_point else (info.min if largest else info.max)
        return torch.full(shape, fill, dtype=x.dtype)
    return x.amax(dim=dims, keepdim=keep) if largest else x.amin(dim=dims, keepdim=keep)


_KINDS = {
    "ReduceMean": _mean,
    "ReduceSum": _sum,
    "ReduceProd": _prod,
    "ReduceMax": lambda x, d, k: _extreme(x, d, k, True),
    "ReduceMin": lambda x, d, k: _extreme(x, d, k, False),
    "ReduceL1": lambda x, d, k: _sum(x.abs(), d, k),
    # vector_norm's gradient at a zero vector is 0, sqrt(sum(x * x))'s is NaN (Swin v2 normalises zero-padded tokens)
    "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, 2, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: _sum(x * x, d, k),
    "ReduceLogSum": lambda x, d, k: _sum(x, d, k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k) if x.numel() else _sum(x.exp(), d, k).log(),
}


class Reduce(torch.nn.Module):
    """One Reduce* node; ``axes`` from the attribute, or from the second input where the version has it."""

    def __init__(self, kind: str, attr_axes, keepdims: bool, noop: bool):
        super().__init__()
        self.kind, self.fn = kind, _KINDS[kind]
        self.attr_axes, self.keepdims, self.noop = attr_axes, keepdims, noop

    def forward(self, x, axes=None):
        axes = ints(axes) if axes is not None else list(self.attr_axes or [])
        if not axes:
            if self.noop:
                return x
            axes = list(range(x.dim()))
        if x.dim() == 0:
            return self.fn(x.reshape(1), (0,), False) if axes else x
        dims = tuple(sorted({a % x.dim() for a in axes}))
        return self.fn(x, dims, self.keepdims)

    def extra_repr(self) -> str:
        return f"{self.kind}(axes={self.attr_axes}, keepdims={self.keepdims})"


def _reduce(node, a, opset):
    return Reduce(node.op_type, a.get("axes"), bool(a.get("keepdims", 1)), bool(a.get("noop_with_empty_axes", 0)))


register("ReduceMean", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", until=18, types=FLOATS)(_reduce)
register("ReduceMax", "ReduceMin", until=20, types=NUMERIC)(_reduce)
register("ReduceSum", "ReduceProd", "ReduceL1", "ReduceSumSquare", until=18, types=NUMERIC)(_reduce)


def _arg(x, axis: int, keepdims: bool, last: bool, largest: bool):
    axis = axis % max(x.dim(), 1)
    if last:
        x = x.flip(axis)
    i = x.argmax(dim=axis, keepdim=keepdims) if largest else x.argmin(dim=axis, keepdim=keepdims)
    return x.shape[axis] - 1 - i if last else i


@register("ArgMax", "ArgMin", until=13, types=NUMERIC)
def argmax(node, a, opset):
    return Lambda(node.op_type, _arg, axis=int(a.get("axis", 0)), keepdims=bool(a.get("keepdims", 1)),
                  last=bool(a.get("select_last_index", 0)), largest=node.op_type == "ArgMax")


def _cumsum(x, axis, exclusive: bool, reverse: bool):
    ax = int(axis.reshape(-1)[0]) % x.dim()
    if reverse:
        x = x.flip(ax)
    y = x.cumsum(ax, dtype=x.dtype)
    if exclusive:
        y = torch.cat([torch.zeros_like(y.narrow(ax, 0, 1)), y.narrow(ax, 0, y.shape[ax] - 1)], ax)
    return y.flip(ax) if reverse else y


@register("CumSum", since=11, until=14, types=NUMERIC)
def cumsum(node, a, opset):
    return Lambda("CumSum", _cumsum, exclusive=bool(a.get("exclusive", 0)), reverse=bool(a.get("reverse", 0)))
