"""Fully-connected ops: Gemm and MatMul."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xfer.importer.ops.common import Lambda
from xfer.importer.registry import FLOATS, register


@register("Gemm", until=13, types=FLOATS)
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


@register("MatMul", until=13, types=FLOATS)
def matmul(node, a, opset):
    return Lambda("MatMul", torch.matmul)
