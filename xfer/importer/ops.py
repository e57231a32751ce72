"""Converters, one small function per op family (see ``registry``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xfer.errors import XferError
from xfer.importer.registry import register


class Lambda(nn.Module):
    """A parameter-free node: a function of its inputs (kept picklable and printable)."""

    def __init__(self, name: str, fn, **kw: Any):
        super().__init__()
        self.name, self.fn, self.kw = name, fn, kw

    def forward(self, *xs):
        return self.fn(*xs, **self.kw)

    def extra_repr(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.kw.items())})"


def _unsupported(node, what: str) -> XferError:
    return XferError(f"node '{node.name or node.output[0]}' ({node.op_type}): {what} is not supported")


def _pads(node, a: dict, nd: int) -> tuple[list[int], bool]:
    """ONNX [x1_begin, x2_begin, ..., x1_end, ...] -> (pads, symmetric)."""
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise _unsupported(node, f"auto_pad={auto}")
    pads = list(a.get("pads", [0] * (2 * nd))) if auto == "NOTSET" else [0] * (2 * nd)
    return pads, pads[:nd] == pads[nd:]


def _torch_pad(pads: list[int], nd: int) -> list[int]:
    """ONNX begin/end pads -> F.pad order (last dim first)."""
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


@register("Conv")
def conv(node, a, opset):
    k = a.get("kernel_shape")
    nd = len(k) if k else 2
    if nd not in (1, 2, 3):
        raise _unsupported(node, f"{nd}-D convolution")
    pads, sym = _pads(node, a, nd)
    strides, dil, groups = a.get("strides", [1] * nd), a.get("dilations", [1] * nd), a.get("group", 1)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]

    def run(x, w, b=None):
        if not sym:
            x = F.pad(x, _torch_pad(pads, nd))
        return fn(x, w, b, stride=strides, padding=pads[:nd] if sym else 0, dilation=dil, groups=groups)

    return Lambda("Conv", run)


@register("Gemm")
def gemm(node, a, opset):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = bool(a.get("transA", 0)), bool(a.get("transB", 0))

    def run(x, w, c=None):
        x = x.t() if ta else x
        if c is not None and alpha == 1.0 and beta == 1.0 and tb:
            return F.linear(x, w, c)
        y = x @ (w.t() if tb else w)
        if alpha != 1.0:
            y = y * alpha
        if c is not None:
            y = y + (c * beta if beta != 1.0 else c)
        return y

    return Lambda("Gemm", run)


@register("MatMul")
def matmul(node, a, opset):
    return Lambda("MatMul", torch.matmul)


@register("Add", "Sub", "Mul", "Div")
def binary(node, a, opset):
    fn = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[node.op_type]
    return Lambda(node.op_type, fn)


@register("Relu", "Tanh", "Sigmoid", "Identity", "LeakyRelu", "Elu")
def activation(node, a, opset):
    if node.op_type == "LeakyRelu":
        return Lambda("LeakyRelu", F.leaky_relu, negative_slope=float(a.get("alpha", 0.01)))
    if node.op_type == "Elu":
        return Lambda("Elu", F.elu, alpha=float(a.get("alpha", 1.0)))
    fn = {"Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Identity": lambda x: x}[node.op_type]
    return Lambda(node.op_type, fn)


def _softmax(x, axis: int, legacy: bool, log: bool):
    f = torch.log_softmax if log else torch.softmax
    if not legacy:
        return f(x, dim=axis)
    ax = axis % x.dim()
    shape = x.shape
    return f(x.reshape(int(np.prod(shape[:ax])), -1), dim=1).reshape(shape)


@register("Softmax", "LogSoftmax")
def softmax(node, a, opset):
    legacy = opset < 13
    axis = a.get("axis", 1 if legacy else -1)
    return Lambda(node.op_type, _softmax, axis=axis, legacy=legacy, log=node.op_type == "LogSoftmax")


class Dropout(nn.Module):
    """ONNX Dropout: identity in inference, real dropout while the module trains."""

    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, x, ratio=None, training_mode=None):
        return F.dropout(x, self.ratio, self.training)


@register("Dropout")
def dropout(node, a, opset):
    if len(node.output) > 1 and node.output[1]:
        raise _unsupported(node, "the mask output")
    return Dropout(float(a.get("ratio", 0.5)))


def _flatten(x, axis: int):
    ax = axis % x.dim() if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:ax])) if ax else 1, -1)


@register("Flatten")
def flatten(node, a, opset):
    return Lambda("Flatten", _flatten, axis=a.get("axis", 1))


def _reshape(x, shape, allowzero: int = 0):
    target = [int(s) for s in shape.tolist()]
    if not allowzero:
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


@register("Reshape")
def reshape(node, a, opset):
    if "shape" in a:  # opset < 5
        shape = torch.tensor(a["shape"])
        return Lambda("Reshape", lambda x: _reshape(x, shape))
    return Lambda("Reshape", _reshape, allowzero=a.get("allowzero", 0))


@register("Concat")
def concat(node, a, opset):
    return Lambda("Concat", lambda *xs, axis: torch.cat(xs, dim=axis), axis=a["axis"])


def _pool_fn(node, a, kind: str):
    k = list(a["kernel_shape"])
    nd = len(k)
    if nd not in (1, 2, 3):
        raise _unsupported(node, f"{nd}-D pooling")
    pads, sym = _pads(node, a, nd)
    strides = list(a.get("strides", [1] * nd))
    ceil = bool(a.get("ceil_mode", 0))
    dil = list(a.get("dilations", [1] * nd))
    if kind == "max":
        if a.get("storage_order", 0):
            raise _unsupported(node, "storage_order=1")
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]

        def run(x):
            if not sym or any(p * 2 > kk for p, kk in zip(pads[:nd], k)):
                x = F.pad(x, _torch_pad(pads, nd), value=-math.inf)
                return fn(x, k, strides, 0, dil, ceil_mode=ceil)
            return fn(x, k, strides, pads[:nd], dil, ceil_mode=ceil)

        return run
    if any(d != 1 for d in dil):
        raise _unsupported(node, "dilated average pooling")
    include = bool(a.get("count_include_pad", 0))
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]

    def run_avg(x):
        if sym and all(p * 2 <= kk for p, kk in zip(pads[:nd], k)):
            return fn(x, k, strides, pads[:nd], ceil_mode=ceil, count_include_pad=include)
        if include:
            return fn(F.pad(x, _torch_pad(pads, nd)), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        ones = torch.ones_like(x[:1, :1])
        s = fn(F.pad(x, _torch_pad(pads, nd)), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        c = fn(F.pad(ones, _torch_pad(pads, nd)), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
        return s / c

    return run_avg


@register("MaxPool")
def maxpool(node, a, opset):
    if len(node.output) > 1 and node.output[1]:
        raise _unsupported(node, "the indices output")
    return Lambda("MaxPool", _pool_fn(node, a, "max"))


@register("AveragePool")
def avgpool(node, a, opset):
    return Lambda("AveragePool", _pool_fn(node, a, "avg"))


@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(node, a, opset):
    if node.op_type == "GlobalAveragePool":
        return Lambda("GlobalAveragePool", lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True))
    return Lambda("GlobalMaxPool", lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True))


class BatchNorm(nn.Module):
    """ONNX BatchNormalization; running mean and variance are updated in place while training."""

    def __init__(self, eps: float, momentum: float):
        super().__init__()
        self.eps, self.momentum = eps, momentum

    def forward(self, x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, self.training, 1.0 - self.momentum, self.eps)


@register("BatchNormalization")
def batchnorm(node, a, opset):
    if len([o for o in node.output if o]) > 1:
        raise _unsupported(node, "training-mode outputs")
    return BatchNorm(float(a.get("epsilon", 1e-5)), float(a.get("momentum", 0.9)))


BUFFER_INPUTS = {"BatchNormalization": (3, 4)}  # inputs that are state, not parameters
