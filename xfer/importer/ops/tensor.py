"""Tensor building and indexing: Split, ConstantOfShape, Expand, Tile, Range, Einsum, GatherElements, ScatterND, CastLike.

What transformers and the dynamo exporter compute with: ShuffleNet's channel
split, a ViT's class token (Expand) and position ids (Range), Swin's window
masks (ScatterND, Where), attention written as Einsum. Indices follow ONNX:
negative values count from the end, out of range is an error.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from onnx import numpy_helper

from xfer.importer.ops.common import Lambda, ints, unsupported
from xfer.importer.ops.elementwise import cast_to
from xfer.importer.registry import ANY, SIGNED, register


def _split(x, split=None, axis: int = 0, attr_split=None, outputs: int = 1, num_outputs: int | None = None):
    axis = axis % x.dim()
    sizes = ints(split) if split is not None else list(attr_split or [])
    if not sizes:
        n = x.shape[axis]
        k = num_outputs or outputs
        step = math.ceil(n / k) if num_outputs else n // k
        if not num_outputs and step * k != n:
            raise ValueError(f"Split: dim {n} does not divide into {k} equal outputs")
        sizes = [min(step, n - i * step) for i in range(k)]
    if sum(sizes) != x.shape[axis] or len(sizes) != outputs:
        raise ValueError(f"Split sizes {sizes} do not cover dim {x.shape[axis]} in {outputs} outputs")
    return tuple(torch.split(x, sizes, dim=axis))


@register("Split", since=2, until=18, types=ANY)
def split(node, a, opset):
    return Lambda("Split", _split, axis=int(a.get("axis", 0)), attr_split=a.get("split"), outputs=len(node.output),
                  num_outputs=a.get("num_outputs"))


def _constant_of_shape(shape, value: torch.Tensor):
    return value.reshape(()).expand(ints(shape)).clone()


@register("ConstantOfShape", since=9, until=25, types=SIGNED)
def constant_of_shape(node, a, opset):
    value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    if value.dtype.kind not in "fiub" or value.dtype in (np.uint16, np.uint32, np.uint64):
        raise unsupported(node, f"a value of type {value.dtype}")
    return Lambda("ConstantOfShape", _constant_of_shape, value=torch.from_numpy(np.array(value, copy=True)))


def _expand(x, shape):
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@register("Expand", since=8, until=13, types=ANY)
def expand(node, a, opset):
    return Lambda("Expand", _expand)


def _tile(x, repeats):
    return x.repeat(ints(repeats)) if x.dim() else x


@register("Tile", since=6, until=13, types=ANY)
def tile(node, a, opset):
    return Lambda("Tile", _tile)


def _range(start, limit, delta):
    s, l_, d = start.item(), limit.item(), delta.item()
    n = max(math.ceil((l_ - s) / d), 0)
    return start.reshape(()) + torch.arange(n, dtype=start.dtype) * delta.reshape(())


@register("Range", since=11, until=11, types=ANY)
def range_(node, a, opset):
    return Lambda("Range", _range)


@register("Einsum", since=12, until=12, types=ANY)
def einsum(node, a, opset):
    equation = a["equation"].replace(" ", "")
    return Lambda("Einsum", lambda *xs: torch.einsum(equation, *xs))


def _gather_elements(x, idx, axis: int):
    axis = axis % x.dim()
    n = x.shape[axis]
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"GatherElements index out of range [-{n}, {n - 1}]")
    return torch.gather(x, axis, torch.where(idx < 0, idx + n, idx))


@register("GatherElements", since=11, until=13, types=ANY)
def gather_elements(node, a, opset):
    return Lambda("GatherElements", _gather_elements, axis=int(a.get("axis", 0)))


def _gather_nd(data, indices, batch_dims: int):
    b = batch_dims
    k = indices.shape[-1]
    lead = tuple(data.shape[:b])
    nb = int(np.prod(lead)) if b else 1
    d = data.reshape((nb,) + tuple(data.shape[b:]))
    idx = indices.reshape(nb, -1, k).long()
    dims = torch.tensor(data.shape[b:b + k], dtype=torch.long)
    if idx.numel() and (bool((idx < -dims).any()) or bool((idx >= dims).any())):
        raise IndexError("GatherND index out of range")
    idx = torch.where(idx < 0, idx + dims, idx)
    batch = torch.arange(nb).reshape(nb, 1).expand(nb, idx.shape[1])
    out = d[(batch,) + tuple(idx.unbind(-1))]
    return out.reshape(tuple(indices.shape[:-1]) + tuple(data.shape[b + k:]))


@register("GatherND", since=11, until=13, types=ANY)
def gather_nd(node, a, opset):
    return Lambda("GatherND", _gather_nd, batch_dims=int(a.get("batch_dims", 0)))


def _scatter_nd(data, indices, updates, reduction: str):
    k = indices.shape[-1]
    idx = indices.reshape(-1, k).long()
    dims = torch.tensor(data.shape[:k], dtype=torch.long)
    if idx.numel() and (bool((idx < -dims).any()) or bool((idx >= dims).any())):
        raise IndexError("ScatterND index out of range")
    idx = torch.where(idx < 0, idx + dims, idx)
    upd = updates.reshape((idx.shape[0],) + tuple(data.shape[k:]))
    where = tuple(idx.unbind(-1))
    if reduction == "none":
        return data.index_put(where, upd)
    if reduction == "add":
        return data.index_put(where, upd, accumulate=True)
    out = data.clone()
    combine = {"mul": torch.mul, "max": torch.maximum, "min": torch.minimum}[reduction]
    for i in range(idx.shape[0]):  # repeated indices combine in order, as the reference does
        at = tuple(int(v) for v in idx[i])
        out[at] = combine(out[at], upd[i])
    return out


@register("ScatterND", since=11, until=18, types=ANY)
def scatter_nd(node, a, opset):
    reduction = a.get("reduction", "none")
    if reduction not in ("none", "add", "mul", "max", "min"):
        raise unsupported(node, f"reduction '{reduction}'")
    return Lambda("ScatterND", _scatter_nd, reduction=reduction)


def _cast_like(x, like):
    return cast_to(x, like.dtype)


@register("CastLike", since=15, until=25, types=ANY)
def cast_like(node, a, opset):
    if int(a.get("saturate", 1)) != 1:
        raise unsupported(node, "saturate=0")
    return Lambda("CastLike", _cast_like)

