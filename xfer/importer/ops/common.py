"""Helpers the converter families share: a picklable function node, errors, ONNX padding rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import nn

from xfer.errors import XferError
from xfer.importer.registry import node_label


class Lambda(nn.Module):
    """A parameter-free node: a function of its inputs (kept printable)."""

    def __init__(self, name: str, fn, **kw: Any):
        super().__init__()
        self.name, self.fn, self.kw = name, fn, kw

    def forward(self, *xs):
        return self.fn(*xs, **self.kw)

    def extra_repr(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.kw.items())})"


def unsupported(node, what: str) -> XferError:
    return XferError(f"{node_label(node)}: {what} is not supported")


def ints(t) -> list[int]:
    """A 1-D integer tensor (or None) as a Python list."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


class Padding:
    """ONNX padding of the spatial dims: explicit ``pads`` or ``auto_pad`` (resolved per input size)."""

    def __init__(self, node, a: dict, nd: int):
        self.auto = a.get("auto_pad", "NOTSET")
        if self.auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise unsupported(node, f"auto_pad={self.auto}")
        self.nd = nd
        self.pads = list(a.get("pads", [0] * (2 * nd))) if self.auto == "NOTSET" else [0] * (2 * nd)
        if len(self.pads) != 2 * nd:
            raise unsupported(node, f"pads of length {len(self.pads)} for {nd} spatial dims")

    def resolve(self, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int]) -> list[int]:
        """[x1_begin, x2_begin, ..., x1_end, ...] for an input of spatial size ``spatial``."""
        if not self.auto.startswith("SAME"):
            return self.pads
        begin, end = [], []
        for n, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            lo = small if self.auto == "SAME_UPPER" else total - small
            begin.append(lo)
            end.append(total - lo)
        return begin + end


def symmetric(pads: list[int], nd: int) -> bool:
    return pads[:nd] == pads[nd:]


def torch_pad(pads: list[int], nd: int) -> list[int]:
    """ONNX begin/end pads of the last ``nd`` dims -> F.pad order (last dim first)."""
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def pad_input(x, pads: list[int], nd: int, value: float = 0.0):
    return F.pad(x, torch_pad(pads, nd), value=value)
