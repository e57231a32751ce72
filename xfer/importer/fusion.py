"""Node patterns the importer runs as one fused PyTorch function, for training speed.

Exporters write SiLU (EfficientNet's activation) as ``Mul(x, Sigmoid(x))``;
run node by node that costs two kernels forward and two saved tensors
backward, ``F.silu`` one of each. And a ReLU or ReLU6 right after a
convolution, a normalisation or an addition runs in place, as torchvision's
own layers do (``inplace=True``): none of those needs its output for its
gradient, and the activation is that output's only reader. Only exact
patterns are rewritten, so the module computes what the graph computes,
value for value; autograd's version check would refuse any in-place write a
gradient needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xfer.importer.ops.common import Lambda
from xfer.importer.ops.elementwise import clip_bound

# producers whose backward does not read their output, so a single reader may overwrite it
_OVERWRITABLE = ("Conv", "BatchNormalization", "Add", "Gemm", "MatMul", "InstanceNormalization", "GroupNormalization")


class InplaceClip(nn.Module):
    """Relu / Clip run in place on a tensor nothing else reads."""

    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu

    def forward(self, x, lo=None, hi=None):
        lo, hi = (0, None) if self.relu else (clip_bound(lo), clip_bound(hi))
        if lo == 0 and hi is None:
            return torch.relu_(x)
        if lo == 0 and hi == 6 and x.dtype.is_floating_point:
            return F.relu6(x, inplace=True)
        return x.clamp_(lo, hi) if lo is not None or hi is not None else x


def inplace_activations(nodes, outputs: set[str]) -> list[int]:
    """Indices of Relu/Clip nodes whose float input comes from an overwritable producer and has no other reader."""
    readers: dict[str, int] = {}
    for n in nodes:
        for t in set(n.input):
            readers[t] = readers.get(t, 0) + 1
    made = {o: n for n in nodes for o in n.output}
    found = []
    for i, n in enumerate(nodes):
        if n.op_type not in ("Relu", "Clip") or not n.input or any(a.name in ("min", "max") for a in n.attribute):
            continue  # (a Clip of opset < 11 keeps its bounds in attributes: left to its converter)
        src = made.get(n.input[0])
        if src is not None and src.op_type in _OVERWRITABLE and readers.get(n.input[0]) == 1 and n.input[0] not in outputs:
            found.append(i)
    return found


def silu_pairs(nodes, outputs: set[str]) -> list[tuple[int, int, str]]:
    """(sigmoid index, mul index, x) for every ``Mul(x, Sigmoid(x))`` whose sigmoid feeds only that Mul."""
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            readers.setdefault(t, []).append(i)
    made = {o: i for i, n in enumerate(nodes) for o in n.output}
    pairs = []
    for i, n in enumerate(nodes):
        if n.op_type != "Mul" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        for s, x in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            j = made.get(s)
            if j is None or nodes[j].op_type != "Sigmoid" or nodes[j].input[0] != x:
                continue
            if readers.get(s) == [i] and s not in outputs:
                pairs.append((j, i, x))
                break
    return pairs


def fuse(nodes, modules: list, wiring: list, outputs: set[str]) -> tuple[list, list]:
    """``modules``/``wiring`` with every SiLU pair run as one ``F.silu`` (the sigmoid node dropped), and the
    activations that may overwrite their input run in place."""
    for i in inplace_activations(nodes, outputs):
        modules[i] = InplaceClip(nodes[i].op_type == "Relu")
    pairs = silu_pairs(nodes, outputs)
    if not pairs:
        return modules, wiring
    drop = {j for j, _, _ in pairs}
    for _, i, x in pairs:
        modules[i] = Lambda("SiLU", F.silu)
        wiring[i] = ([x], list(nodes[i].output))
    keep = [k for k in range(len(modules)) if k not in drop]
    return [modules[k] for k in keep], [wiring[k] for k in keep]
