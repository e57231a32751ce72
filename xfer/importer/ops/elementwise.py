"""Element-wise ops: arithmetic (binary and variadic), activations, Clip, Cast."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from onnx import TensorProto

from xfer.importer.ops.common import Lambda, unsupported
from xfer.importer.registry import ANY, FLOATS, NUMERIC, SIGNED, register

TORCH_DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32, TensorProto.INT64: torch.int64, TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}


def _div(a, b):
    """ONNX integer division truncates toward zero; float division is true division."""
    if a.dtype.is_floating_point:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div}


@register("Add", "Sub", "Mul", "Div", since=7, until=14)
def binary(node, a, opset):
    return Lambda(node.op_type, _BINARY[node.op_type])


def _fold(fn, *xs):
    return functools.reduce(fn, xs)


def _mean(*xs):
    return _fold(torch.add, *xs) / len(xs)


@register("Sum", "Mean", until=13, types=FLOATS)
def variadic_sum(node, a, opset):
    if node.op_type == "Sum":
        return Lambda("Sum", functools.partial(_fold, torch.add))
    return Lambda("Mean", _mean)


@register("Max", "Min", until=13)
def variadic_extreme(node, a, opset):
    return Lambda(node.op_type, functools.partial(_fold, torch.maximum if node.op_type == "Max" else torch.minimum))


def _identity(x):
    return x


_UNARY = {"Tanh": torch.tanh, "Sigmoid": torch.sigmoid}


@register("Relu", until=14, types=FLOATS | SIGNED)
def relu(node, a, opset):
    return Lambda("Relu", torch.relu)


@register("Tanh", "Sigmoid", until=13, types=FLOATS)
def smooth(node, a, opset):
    return Lambda(node.op_type, _UNARY[node.op_type])


@register("Identity", until=25, types=ANY)
def identity(node, a, opset):
    return Lambda("Identity", _identity)


@register("LeakyRelu", until=16, types=FLOATS)
def leaky_relu(node, a, opset):
    return Lambda("LeakyRelu", F.leaky_relu, negative_slope=float(a.get("alpha", 0.01)))


@register("Elu", until=22, types=FLOATS)
def elu(node, a, opset):
    return Lambda("Elu", F.elu, alpha=float(a.get("alpha", 1.0)))


def clip_bound(v):
    """A Clip bound as a Python number: ``torch.clamp`` with scalars is one fused op forward and backward."""
    return None if v is None or v.numel() == 0 else v.reshape(-1)[0].item()


def _clip(x, lo=None, hi=None):
    lo, hi = clip_bound(lo), clip_bound(hi)
    if lo is None and hi is None:
        return x
    if lo == 0 and hi == 6 and x.dtype.is_floating_point:
        return F.relu6(x)
    return torch.clamp(x, lo, hi)


@register("Clip", since=6, until=13, types=NUMERIC)
def clip(node, a, opset):
    if opset < 11:
        lo, hi = torch.tensor(float(a.get("min", -3.4028234663852886e38))), torch.tensor(float(a.get("max", 3.4028234663852886e38)))
        return Lambda("Clip", lambda x: _clip(x, lo, hi))
    return Lambda("Clip", _clip)


def cast_to(x, dtype):
    """ONNX Cast: float to integer truncates toward zero."""
    if x.dtype.is_floating_point and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)
    return x.to(dtype)


@register("Cast", since=6, until=28, types=ANY)
def cast(node, a, opset):
    to = int(a["to"])
    if to not in TORCH_DTYPES:
        raise unsupported(node, f"casting to {TensorProto.DataType.Name(to)}")
    return Lambda("Cast", cast_to, dtype=TORCH_DTYPES[to])
