"""Normalisation and probability ops: BatchNormalization, Softmax, LogSoftmax, Dropout."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xfer.importer.ops.common import Lambda, unsupported
from xfer.importer.registry import FLOATS, register


class BatchNorm(nn.Module):
    """ONNX BatchNormalization; running mean and variance are updated in place while training.

    A frozen normalisation (its scale does not train) keeps inference behaviour
    in training mode too, so a frozen feature extractor stays bit-identical.
    """

    def __init__(self, eps: float, momentum: float):
        super().__init__()
        self.eps, self.momentum = eps, momentum

    def forward(self, x, scale, bias, mean, var):
        training = self.training and scale.requires_grad
        return F.batch_norm(x, mean, var, scale, bias, training, 1.0 - self.momentum, self.eps)


@register("BatchNormalization", since=7, until=15, buffers=(3, 4), types=FLOATS)
def batchnorm(node, a, opset):
    if len([o for o in node.output if o]) > 1 or a.get("training_mode", 0):
        raise unsupported(node, "training-mode outputs")
    if a.get("spatial", 1) != 1:
        raise unsupported(node, "spatial=0")
    return BatchNorm(float(a.get("epsilon", 1e-5)), float(a.get("momentum", 0.9)))


def _softmax(x, axis: int, legacy: bool, log: bool):
    f = torch.log_softmax if log else torch.softmax
    if not legacy:
        return f(x, dim=axis)
    ax = axis % x.dim()
    shape = x.shape
    return f(x.reshape(int(np.prod(shape[:ax])), -1), dim=1).reshape(shape)


@register("Softmax", "LogSoftmax", until=13, types=FLOATS)
def softmax(node, a, opset):
    legacy = opset < 13
    axis = a.get("axis", 1 if legacy else -1)
    return Lambda(node.op_type, _softmax, axis=axis, legacy=legacy, log=node.op_type == "LogSoftmax")


class Dropout(nn.Module):
    """ONNX Dropout: identity in inference (with an all-true mask), real dropout while the module trains."""

    def __init__(self, ratio: float, mask: bool):
        super().__init__()
        self.ratio, self.mask = ratio, mask

    def forward(self, x, ratio=None, training_mode=None):
        y = F.dropout(x, self.ratio if ratio is None else float(ratio), True) if self.training else x
        if self.mask:
            return y, (y != 0) if self.training else torch.ones_like(x, dtype=torch.bool)
        return y


@register("Dropout", until=22, types=FLOATS)
def dropout(node, a, opset):
    if len(node.input) > 2 and node.input[2]:
        raise unsupported(node, "the training_mode input (xfer decides when a model trains)")
    return Dropout(float(a.get("ratio", 0.5)), len(node.output) > 1 and bool(node.output[1]))


class LayerNorm(nn.Module):
    """ONNX LayerNormalization over the dims from ``axis`` on; ``F.layer_norm`` when only Y is read."""

    def __init__(self, axis: int, eps: float, stats: bool):
        super().__init__()
        self.axis, self.eps, self.stats = axis, eps, stats

    def forward(self, x, scale, bias=None):
        axis = self.axis % x.dim()
        shape = tuple(x.shape[axis:])
        w = scale.expand(shape) if tuple(scale.shape) != shape else scale
        b = bias.expand(shape) if bias is not None and tuple(bias.shape) != shape else bias
        if not self.stats:
            return F.layer_norm(x, shape, w, b, self.eps)
        dims = tuple(range(axis, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        inv = torch.rsqrt(var + self.eps)
        y = (x - mean) * inv * w
        return (y + b if b is not None else y), mean, inv


@register("LayerNormalization", since=17, until=17, types=FLOATS)
def layer_norm(node, a, opset):
    return LayerNorm(int(a.get("axis", -1)), float(a.get("epsilon", 1e-5)), len([o for o in node.output if o]) > 1)


class GroupNorm(nn.Module):
    """ONNX GroupNormalization: scale and bias per channel (version 21), or per group (version 18)."""

    def __init__(self, groups: int, eps: float, per_group: bool):
        super().__init__()
        self.groups, self.eps, self.per_group = groups, eps, per_group

    def forward(self, x, scale, bias):
        if self.per_group:
            reps = x.shape[1] // self.groups
            scale, bias = scale.repeat_interleave(reps), bias.repeat_interleave(reps)
        return F.group_norm(x, self.groups, scale, bias, self.eps)


@register("GroupNormalization", since=18, until=21, types=FLOATS)
def group_norm(node, a, opset):
    if int(a.get("stash_type", 1)) != 1:
        raise unsupported(node, "stash_type other than float")
    return GroupNorm(int(a["num_groups"]), float(a.get("epsilon", 1e-5)), opset < 21)


def _instance_norm(x, scale, bias, eps: float):
    return F.instance_norm(x, weight=scale, bias=bias, eps=eps)


@register("InstanceNormalization", since=6, until=22, types=FLOATS)
def instance_norm(node, a, opset):
    return Lambda("InstanceNormalization", _instance_norm, eps=float(a.get("epsilon", 1e-5)))
