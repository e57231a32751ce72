"""The Deep Alignment Network's connection layers, in numpy (the specification) and as ONNX nodes (what runs).

Between two stages DAN (Kowalski et al., 2017) moves the face to a canonical
pose: the similarity transform ``T`` that maps the current landmark estimate
``S`` onto the mean shape ``S0`` in the least-squares sense (closed form: scale
and rotation ``a = sum(x.x0)/|x|^2``, ``b = sum(x ^ x0)/|x|^2`` of the centred
shapes), the image warped by it, a heatmap of the transformed landmarks
``H(q) = 1 / (1 + min_i |q - T(S)_i|)`` (pixels), and a feature image made
from the previous stage's dense layer. The next stage regresses a correction
``dS`` in the canonical frame, mapped back: ``S' = T^-1(T(S) + dS) = S + R^-1 dS``.

Landmarks are (x, y) in [0, 1] of the image's width and height (0 = the left
edge of the first pixel), so a grid value for GridSample (align_corners=0) is
``2 p - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """``T(p) = R (p - src_mean) + dst_mean`` with ``R = [[a, -b], [b, a]]`` (scale x rotation), per image."""

    a: np.ndarray         # (N,)
    b: np.ndarray         # (N,)
    src_mean: np.ndarray  # (N, 2)
    dst_mean: np.ndarray  # (N, 2)

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Points (N, K, 2) mapped by T."""
        q = p - self.src_mean[:, None]
        a, b = self.a[:, None], self.b[:, None]
        out = np.stack([a * q[..., 0] - b * q[..., 1], b * q[..., 0] + a * q[..., 1]], -1)
        return out + self.dst_mean[:, None]

    def invert(self, p: np.ndarray) -> np.ndarray:
        """Points (N, K, 2) mapped by T^-1."""
        q = p - self.dst_mean[:, None]
        r2 = (self.a ** 2 + self.b ** 2)[:, None]
        a, b = self.a[:, None] / r2, self.b[:, None] / r2
        out = np.stack([a * q[..., 0] + b * q[..., 1], -b * q[..., 0] + a * q[..., 1]], -1)
        return out + self.src_mean[:, None]


def similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """The least-squares similarity transform taking shapes ``src`` (N, K, 2) onto ``dst`` ((K, 2) or (N, K, 2))."""
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    ms, md = src.mean(1), dst.mean(1)
    x, y = src - ms[:, None], dst - md[:, None]
    norm = (x ** 2).sum((1, 2))
    a = (x * y).sum((1, 2)) / norm
    b = (x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0]).sum(1) / norm
    return Similarity(a, b, ms, md)


def heatmap(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W): ``1 / (1 + distance in pixels from each pixel centre to the nearest landmark)``."""
    h, w = size
    qy, qx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    px, py = points[..., 0] * w, points[..., 1] * h  # (N, K)
    d2 = (qx[None, :, :, None] - px[:, None, None]) ** 2 + (qy[None, :, :, None] - py[:, None, None]) ** 2
    return 1.0 / (1.0 + np.sqrt(d2.min(-1)))


def warp(images: np.ndarray, t: Similarity) -> np.ndarray:
    """(N, C, H, W) images resampled into the canonical frame: output pixel q reads input T^-1(q), bilinear,
    zeros outside (GridSample's align_corners=0 convention)."""
    n, c, h, w = images.shape
    qy, qx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    q = np.broadcast_to(np.stack([qx, qy], -1).reshape(1, h * w, 2), (n, h * w, 2))
    p = t.invert(q)
    sx, sy = p[..., 0] * w - 0.5, p[..., 1] * h - 0.5
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    out = np.zeros((n, c, h * w))
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(sx - xi)) * (1 - np.abs(sy - yi))
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            for i in range(n):
                v = images[i][:, np.clip(yi[i], 0, h - 1), np.clip(xi[i], 0, w - 1)]
                out[i] += v * (wgt[i] * ok[i])
    return out.reshape(n, c, h, w)


class Nodes:
    """A small ONNX graph builder: ``op`` appends a node and returns its output's name; constants are initializers."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.count = prefix, 0
        self.nodes: list[Any] = []  # onnx.NodeProto
        self.inits: list[Any] = []  # onnx.TensorProto
        self.consts: list[str] = []  # initializers that are constants (frozen), not weights

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: Any) -> Any:
        from onnx import helper

        self.count += 1
        base = name or f"{self.prefix}{op_type.lower()}{self.count}"
        outs = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        arr = np.asarray(value)
        arr = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
        self.inits.append(numpy_helper.from_array(arr, self.prefix + name))
        self.consts.append(self.prefix + name)
        return self.prefix + name


@dataclass(frozen=True)
class Canonical:
    """A stage's connection outputs: the transform's parts, the warped image, the heatmap, the moved landmarks."""

    a: str        # (N, 1, 1)
    b: str        # (N, 1, 1)
    r2: str       # (N, 1, 1): a^2 + b^2
    warped: str   # (N, C, H, W)
    heat: str     # (N, 1, H, W)


def connect(g: Nodes, image: str, shape: str, mean_shape: np.ndarray, size: tuple[int, int]) -> Canonical:
    """ONNX nodes of one connection layer: from landmarks ``shape`` (N, K, 2) to the canonical image and heatmap."""
    h, w = size
    s0 = np.asarray(mean_shape, np.float32)
    m0 = s0.mean(0)
    c0 = s0 - m0
    mu = g.op("ReduceMean", shape, axes=[1], keepdims=1)                       # (N, 1, 2)
    x = g.op("Sub", shape, mu)
    xx, xy = g.op("Split", x, outputs=2, axis=2)                               # (N, K, 1) each
    yx, yy = g.const("mean_x", c0[None, :, :1]), g.const("mean_y", c0[None, :, 1:])
    norm = g.op("ReduceSum", g.op("Mul", x, x), g.const("axes12", np.array([1, 2])), keepdims=1)
    dot = g.op("Add", g.op("Mul", xx, yx), g.op("Mul", xy, yy))
    cross = g.op("Sub", g.op("Mul", xx, yy), g.op("Mul", xy, yx))
    axes = g.const("axes12b", np.array([1, 2]))
    a = g.op("Div", g.op("ReduceSum", dot, axes, keepdims=1), norm)            # (N, 1, 1)
    b = g.op("Div", g.op("ReduceSum", cross, axes, keepdims=1), norm)
    r2 = g.op("Add", g.op("Mul", a, a), g.op("Mul", b, b))
    # T(S): the landmarks in the canonical frame, for the heatmap
    tx = g.op("Sub", g.op("Mul", a, xx), g.op("Mul", b, xy))
    ty = g.op("Add", g.op("Mul", b, xx), g.op("Mul", a, xy))
    # the grid: canonical pixel centre q reads the input at T^-1(q) = R^-1 (q - m0) + mu
    qy, qx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    qx_c, qy_c = g.const("qx", (qx - m0[0])[None]), g.const("qy", (qy - m0[1])[None])   # (1, H, W)
    ia, ib = g.op("Div", a, r2), g.op("Div", b, r2)
    mux, muy = g.op("Split", mu, outputs=2, axis=2)                            # (N, 1, 1) each
    px = g.op("Add", g.op("Add", g.op("Mul", ia, qx_c), g.op("Mul", ib, qy_c)), mux)
    py = g.op("Add", g.op("Sub", g.op("Mul", ia, qy_c), g.op("Mul", ib, qx_c)), muy)
    two, one = g.const("two", np.float32(2.0)), g.const("one", np.float32(1.0))
    last = g.const("axis3", np.array([3]))
    gx = g.op("Unsqueeze", g.op("Sub", g.op("Mul", px, two), one), last)
    gy = g.op("Unsqueeze", g.op("Sub", g.op("Mul", py, two), one), last)
    warped = g.op("GridSample", image, g.op("Concat", gx, gy, axis=3), mode="bilinear", padding_mode="zeros",
                  align_corners=0, name=f"{g.prefix}warped")
    heat = _heatmap_nodes(g, tx, ty, m0, size)
    return Canonical(a, b, r2, warped, heat)


def _heatmap_nodes(g: Nodes, tx: str, ty: str, m0: np.ndarray, size: tuple[int, int]) -> str:
    """(N, 1, H, W) heatmap of the canonical landmarks ``tx + m0x, ty + m0y`` ((N, K, 1) each, centred)."""
    h, w = size
    qy, qx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    # pixel centres minus the mean shape's centre (in pixels), as (1, 1, HW): the landmarks are centred too
    cx, cy = g.const("hx", (qx.reshape(1, 1, -1) - m0[0] * w)), g.const("hy", (qy.reshape(1, 1, -1) - m0[1] * h))
    dx = g.op("Sub", cx, g.op("Mul", tx, g.const("w", np.float32(w))))        # (N, K, HW)
    dy = g.op("Sub", cy, g.op("Mul", ty, g.const("h", np.float32(h))))
    d2 = g.op("ReduceMin", g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy)), axes=[1], keepdims=1)
    near = g.op("Sqrt", d2)                                                     # (N, 1, HW)
    heat = g.op("Reciprocal", g.op("Add", near, g.const("one_h", np.float32(1.0))))
    return g.op("Reshape", heat, g.const("heat_shape", np.array([-1, 1, h, w])), name=f"{g.prefix}heatmap")


def corrected(g: Nodes, shape: str, delta: str, c: Canonical) -> str:
    """``S + R^-1 dS``: a correction regressed in the canonical frame, mapped back (N, K, 2)."""
    sx, sy = g.op("Split", shape, outputs=2, axis=2)
    dx, dy = g.op("Split", delta, outputs=2, axis=2)
    ia, ib = g.op("Div", c.a, c.r2), g.op("Div", c.b, c.r2)
    nx = g.op("Add", sx, g.op("Add", g.op("Mul", ia, dx), g.op("Mul", ib, dy)))
    ny = g.op("Add", sy, g.op("Sub", g.op("Mul", ia, dy), g.op("Mul", ib, dx)))
    return g.op("Concat", nx, ny, axis=2)
