"""Activations of modern CNNs and transformers: GELU, HardSwish, HardSigmoid, Softplus, Mish, PReLU, SELU, Softsign.

Each maps to PyTorch's fused function where ONNX's definition is the same
(``F.hardswish``, ``F.gelu``, ``F.mish``), so an imported MobileNetV3 or ViT
trains as fast as the native network; attributes off PyTorch's defaults take
the written-out formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xfer.importer.ops.common import Lambda, unsupported
from xfer.importer.registry import FLOATS, register


@register("Gelu", since=20, until=22, types=FLOATS)
def gelu(node, a, opset):
    approximate = a.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise unsupported(node, f"approximate='{approximate}'")
    return Lambda("Gelu", F.gelu, approximate=approximate)


@register("HardSwish", since=14, until=22, types=FLOATS)
def hardswish(node, a, opset):
    return Lambda("HardSwish", F.hardswish)


def _hardsigmoid(x, alpha: float, beta: float):
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@register("HardSigmoid", since=6, until=22, types=FLOATS)
def hardsigmoid(node, a, opset):
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return Lambda("HardSigmoid", F.hardsigmoid)
    return Lambda("HardSigmoid", _hardsigmoid, alpha=alpha, beta=beta)


def _softplus(x):
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype))


@register("Softplus", until=22, types=FLOATS)
def softplus(node, a, opset):
    return Lambda("Softplus", _softplus)


@register("Mish", since=18, until=22, types=FLOATS)
def mish(node, a, opset):
    return Lambda("Mish", F.mish)


@register("Softsign", until=22, types=FLOATS)
def softsign(node, a, opset):
    return Lambda("Softsign", F.softsign)


def _selu(x, alpha: float, gamma: float):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("Selu", since=6, until=22, types=FLOATS)
def selu(node, a, opset):
    alpha, gamma = float(a.get("alpha", 1.67326319217681884765625)), float(a.get("gamma", 1.05070102214813232421875))
    return Lambda("Selu", _selu, alpha=alpha, gamma=gamma)


def _prelu(x, slope):
    if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        # per-channel slope of opset 6, which onnx's version converter carries over unchanged: under opset 7's
        # broadcasting it could not apply to this input at all
        slope = slope.reshape([-1] + [1] * (x.dim() - 2))
    return torch.where(x < 0, x * slope, x)


@register("PRelu", since=7, until=16, types=FLOATS)
def prelu(node, a, opset):
    return Lambda("PRelu", _prelu)
