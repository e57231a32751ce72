"""Convolutions and pooling: Conv, ConvTranspose, MaxPool, AveragePool, the global pools, LRN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xfer.importer.ops.common import Lambda, Padding, pad_input, symmetric, unsupported
from xfer.importer.registry import FLOATS, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_rank(node, a, key: str = "kernel_shape") -> int | None:
    k = a.get(key)
    if k is None:
        return None
    if len(k) not in (1, 2, 3):
        raise unsupported(node, f"{len(k)}-D {node.op_type}")
    return len(k)


@register("Conv", until=22, types=FLOATS)
def conv(node, a, opset):
    nd0 = _spatial_rank(node, a)
    padding = Padding(node, a, nd0) if nd0 is not None else None

    def run(x, w, b=None):
        nd = w.dim() - 2
        if nd not in _CONV:
            raise unsupported(node, f"{nd}-D convolution")
        pad = Padding(node, a, nd) if nd0 is None else padding
        k = list(a.get("kernel_shape", w.shape[2:]))
        strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        pads = pad.resolve(x.shape[2:], k, strides, dil)
        sym = symmetric(pads, nd)
        if not sym:
            x = pad_input(x, pads, nd)
        return _CONV[nd](x, w, b, stride=strides, padding=pads[:nd] if sym else 0, dilation=dil,
                         groups=a.get("group", 1))

    return Lambda("Conv", run)


@register("ConvTranspose", until=22, types=FLOATS)
def conv_transpose(node, a, opset):
    if "output_shape" in a:
        raise unsupported(node, "output_shape")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise unsupported(node, f"auto_pad={a['auto_pad']}")

    def run(x, w, b=None):
        nd = w.dim() - 2
        if nd not in _CONV_T:
            raise unsupported(node, f"{nd}-D transposed convolution")
        pads = list(a.get("pads", [0] * (2 * nd))) if a.get("auto_pad", "NOTSET") == "NOTSET" else [0] * (2 * nd)
        strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        out_pad = list(a.get("output_padding", [0] * nd))
        y = _CONV_T[nd](x, w, b, stride=strides, padding=0, output_padding=out_pad, groups=a.get("group", 1),
                        dilation=dil)
        if any(pads):
            index = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[i + nd]) for i in range(nd)]
            y = y[tuple(index)]
        return y

    return Lambda("ConvTranspose", run)


def _pool(node, a, kind: str):
    nd = _spatial_rank(node, a)
    if nd is None:
        raise unsupported(node, "a pool without kernel_shape")
    k = list(a["kernel_shape"])
    padding = Padding(node, a, nd)
    strides = list(a.get("strides", [1] * nd))
    ceil = bool(a.get("ceil_mode", 0))
    dil = list(a.get("dilations", [1] * nd))
    if kind == "max":
        if a.get("storage_order", 0):
            raise unsupported(node, "storage_order=1")

        def run_max(x):
            pads = padding.resolve(x.shape[2:], k, strides, dil)
            if ceil and padding.auto.startswith("SAME"):
                raise unsupported(node, "ceil_mode with auto_pad SAME")
            if not symmetric(pads, nd) or any(p * 2 > kk for p, kk in zip(pads[:nd], k)):
                x = pad_input(x, pads, nd, value=-math.inf)
                return _MAX[nd](x, k, strides, 0, dil, ceil_mode=ceil)
            return _MAX[nd](x, k, strides, pads[:nd], dil, ceil_mode=ceil)

        return run_max
    if any(d != 1 for d in dil):
        raise unsupported(node, "dilated average pooling")
    include = bool(a.get("count_include_pad", 0))

    def run_avg(x):
        pads = padding.resolve(x.shape[2:], k, strides, dil)
        if symmetric(pads, nd) and all(p * 2 <= kk for p, kk in zip(pads[:nd], k)):
            return _AVG[nd](x, k, strides, pads[:nd], ceil_mode=ceil, count_include_pad=include)
        if include:
            return _AVG[nd](pad_input(x, pads, nd), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        ones = torch.ones_like(x[:1, :1])
        s = _AVG[nd](pad_input(x, pads, nd), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        c = _AVG[nd](pad_input(ones, pads, nd), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        return s / c

    return run_avg


@register("MaxPool", until=22, types=FLOATS)
def maxpool(node, a, opset):
    if len(node.output) > 1 and node.output[1]:
        raise unsupported(node, "the indices output")
    return Lambda("MaxPool", _pool(node, a, "max"))


@register("AveragePool", until=22, types=FLOATS)
def avgpool(node, a, opset):
    return Lambda("AveragePool", _pool(node, a, "avg"))


def _global_mean(x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _global_max(x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalAveragePool", "GlobalMaxPool", until=22, types=FLOATS)
def global_pool(node, a, opset):
    return Lambda(node.op_type, _global_mean if node.op_type == "GlobalAveragePool" else _global_max)


def _lrn(x, size: int, alpha: float, beta: float, bias: float):
    """ONNX LRN: the window over channels is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    n, c = x.shape[0], x.shape[1]
    sq = (x * x).reshape(n, 1, c, -1)
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = F.pad(sq, (0, 0, front, back))
    window = F.avg_pool2d(sq, (size, 1), stride=1) * size
    return x / (bias + alpha / size * window.reshape(x.shape)) ** beta


@register("LRN", until=13, types=FLOATS)
def lrn(node, a, opset):
    return Lambda("LRN", _lrn, size=int(a["size"]), alpha=float(a.get("alpha", 1e-4)), beta=float(a.get("beta", 0.75)),
                  bias=float(a.get("bias", 1.0)))
