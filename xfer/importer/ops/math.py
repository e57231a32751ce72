"""Element-wise math, comparisons and logic: Sqrt .. Log, Erf, Pow, Mod, Equal .. GreaterOrEqual, Not .. Xor, Where.

Integer semantics follow ONNX: ``Pow`` keeps the base's element type, ``Mod``
with ``fmod=0`` takes the divisor's sign (Python's ``%``) and ``fmod=1`` the
dividend's (C's ``fmod``); a float ``Mod`` without ``fmod=1`` is invalid ONNX
and refused.
"""

from __future__ import annotations

import torch
from onnx import TensorProto

from xfer.importer.ops.common import Lambda
from xfer.importer.registry import ANY, FLOATS, NUMERIC, SIGNED, register

_FLOAT_UNARY = {"Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Exp": torch.exp, "Log": torch.log,
                "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
                "Sin": torch.sin, "Cos": torch.cos}
_SIGNED_UNARY = {"Neg": torch.neg, "Abs": torch.abs, "Sign": torch.sign}


@register("Sqrt", "Reciprocal", "Exp", "Log", "Floor", "Ceil", since=6, until=13, types=FLOATS)
def float_unary(node, a, opset):
    return Lambda(node.op_type, _FLOAT_UNARY[node.op_type])


@register("Erf", since=9, until=13, types=FLOATS)
def erf(node, a, opset):
    return Lambda("Erf", torch.erf)


@register("Round", "Sin", "Cos", since=7, until=22, types=FLOATS)
def rounding_trig(node, a, opset):
    return Lambda(node.op_type, _FLOAT_UNARY[node.op_type])  # torch.round rounds half to even, as ONNX does


@register("Neg", "Abs", since=6, until=13, types=FLOATS | SIGNED)
def signed_unary(node, a, opset):
    return Lambda(node.op_type, _SIGNED_UNARY[node.op_type])


@register("Sign", since=9, until=13, types=FLOATS | SIGNED)
def sign(node, a, opset):
    return Lambda("Sign", torch.sign)


def _pow(x, y):
    if x.dtype.is_floating_point:
        return torch.pow(x, y.to(x.dtype))
    if y.dtype.is_floating_point:
        return torch.pow(x.double(), y.double()).to(x.dtype)
    return torch.pow(x, y.to(x.dtype))


@register("Pow", since=7, until=15, types=FLOATS | {TensorProto.INT32, TensorProto.INT64})
def pow_(node, a, opset):
    return Lambda("Pow", _pow)


def _mod(x, y, fmod: bool):
    return torch.fmod(x, y) if fmod else torch.remainder(x, y)


@register("Mod", since=10, until=13, types=NUMERIC)
def mod(node, a, opset):
    return Lambda("Mod", _mod, fmod=bool(a.get("fmod", 0)))


_COMPARE = {"Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
            "GreaterOrEqual": torch.ge}


@register("Equal", since=7, until=19, types=ANY)
def equal(node, a, opset):
    return Lambda("Equal", torch.eq)


@register("Less", "Greater", since=7, until=13, types=NUMERIC)
def less_greater(node, a, opset):
    return Lambda(node.op_type, _COMPARE[node.op_type])


@register("LessOrEqual", "GreaterOrEqual", since=12, until=16, types=NUMERIC)
def less_greater_equal(node, a, opset):
    return Lambda(node.op_type, _COMPARE[node.op_type])


_LOGIC = {"Not": torch.logical_not, "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor}


@register("Not", "And", "Or", "Xor", until=7, types=frozenset({TensorProto.BOOL}))
def logic(node, a, opset):
    return Lambda(node.op_type, _LOGIC[node.op_type])


def _where(cond, x, y):
    return torch.where(cond, x, y)


@register("Where", since=9, until=16, types=frozenset({TensorProto.BOOL}))
def where(node, a, opset):
    return Lambda("Where", _where)
