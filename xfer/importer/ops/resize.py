"""Resize (and its predecessor Upsample) as ``F.interpolate``, for the coordinate modes the two agree on; GridSample
as ``F.grid_sample``.

PyTorch's interpolation covers ONNX's nearest (asymmetric + floor, and
half_pixel + round_prefer_ceil as ``nearest-exact``), linear and cubic
(A = -0.75, half_pixel or align_corners) over the spatial dims. Anything else
(crop-and-resize, antialiasing, other rounding modes, scaling the batch or
channel dims) is refused naming the attribute, never approximated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xfer.importer.ops.common import unsupported
from xfer.importer.registry import FLOATS, register

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


class Resize(torch.nn.Module):
    def __init__(self, node, mode: str, align_corners: bool | None, axes):
        super().__init__()
        self.node, self.mode, self.align_corners, self.axes = node, mode, align_corners, axes

    def _full(self, values, rank: int, fill) -> list:
        vals = values.reshape(-1).tolist()
        if self.axes is None:
            return vals
        full = [fill(d) for d in range(rank)]
        for ax, v in zip(self.axes, vals):
            full[ax % rank] = v
        return full

    def forward(self, x, roi=None, scales=None, sizes=None):
        rank = x.dim()
        if sizes is not None and sizes.numel():
            size = [int(v) for v in self._full(sizes, rank, lambda d: x.shape[d])]
            if size[:2] != list(x.shape[:2]):
                raise unsupported(self.node, "resizing the batch or channel dims")
            args = {"size": size[2:]}
        else:
            scale = [float(v) for v in self._full(scales, rank, lambda _: 1.0)]
            if scale[:2] != [1.0, 1.0]:
                raise unsupported(self.node, "resizing the batch or channel dims")
            args = {"scale_factor": scale[2:], "recompute_scale_factor": False}
            if self.align_corners:  # ONNX maps by (in - 1) / (in * scale - 1), torch by sizes: equal for whole sizes
                exact = [n * s for n, s in zip(x.shape[2:], scale[2:])]
                if any(v != int(v) for v in exact):
                    raise unsupported(self.node, "align_corners Resize by scales that give a fractional size")
                args = {"size": [int(v) for v in exact]}
        out = args.get("size") or [int(n * s) for n, s in zip(x.shape[2:], args["scale_factor"])]
        if self.align_corners is not None and 1 in out:
            raise unsupported(self.node, f"{self.mode} Resize to a length of 1 with these coordinates")
        if rank not in (3, 4, 5) or (self.mode == "bicubic" and rank != 4):
            raise unsupported(self.node, f"{self.mode} Resize of a rank-{rank} tensor")
        mode = self.mode if self.mode != "linear" else _LINEAR[rank - 2]
        if self.align_corners is None:
            return F.interpolate(x, mode=mode, **args)
        return F.interpolate(x, mode=mode, align_corners=self.align_corners, **args)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, align_corners={self.align_corners}"


def _plan(node, a, opset) -> tuple[str, bool | None]:
    mode = a.get("mode", "nearest")
    coord = a.get("coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric")
    nearest = a.get("nearest_mode", "round_prefer_floor")
    if a.get("antialias", 0):
        raise unsupported(node, "antialias=1")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise unsupported(node, f"keep_aspect_ratio_policy='{a['keep_aspect_ratio_policy']}'")
    if mode == "nearest":
        if coord == "asymmetric" and (nearest == "floor" or opset < 11):
            return "nearest", None
        if coord in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return "nearest-exact", None
        raise unsupported(node, f"nearest Resize with {coord} coordinates and nearest_mode='{nearest}'")
    if a.get("exclude_outside", 0):
        raise unsupported(node, "exclude_outside=1")
    if mode == "cubic" and float(a.get("cubic_coeff_a", -0.75)) != -0.75:
        raise unsupported(node, f"cubic_coeff_a={a['cubic_coeff_a']}")
    align = {"align_corners": True, "half_pixel": False, "pytorch_half_pixel": False}.get(coord)
    if mode not in ("linear", "cubic") or align is None:
        raise unsupported(node, f"{mode} Resize with {coord} coordinates")
    return ("linear" if mode == "linear" else "bicubic"), align


@register("Resize", since=10, until=19, types=FLOATS)
def resize(node, a, opset):
    mode, align = _plan(node, a, opset)
    return Resize(node, mode, align, a.get("axes"))


class Upsample(Resize):
    """Upsample (opset 9): inputs X and scales, nearest with asymmetric coordinates."""

    def forward(self, x, scales):
        return super().forward(x, None, scales)


@register("Upsample", since=9, until=9, types=FLOATS)
def upsample(node, a, opset):
    if a.get("mode", "nearest") != "nearest":
        raise unsupported(node, f"{a['mode']} Upsample (asymmetric coordinates)")
    return Upsample(node, "nearest", None, None)


_GRID_MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic",
               "cubic": "bicubic"}


class GridSample(torch.nn.Module):
    """``F.grid_sample`` with ONNX's attributes: the same normalised [-1, 1] grid, padding and corner convention."""

    def __init__(self, node, mode: str, padding: str, align_corners: bool):
        super().__init__()
        self.node, self.mode, self.padding, self.align_corners = node, mode, padding, align_corners

    def forward(self, x, grid):
        if x.dim() != 4:
            raise unsupported(self.node, f"GridSample of a rank-{x.dim()} input (only 4-D)")
        return F.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode=self.padding,
                             align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, padding={self.padding}, align_corners={self.align_corners}"


@register("GridSample", since=16, until=22, types=FLOATS)
def grid_sample(node, a, opset):
    mode = a.get("mode", "linear" if opset >= 20 else "bilinear")
    padding = a.get("padding_mode", "zeros")
    if mode not in _GRID_MODES:
        raise unsupported(node, f"GridSample mode='{mode}'")
    if padding not in ("zeros", "border", "reflection"):
        raise unsupported(node, f"GridSample padding_mode='{padding}'")
    if _GRID_MODES[mode] == "nearest":
        # ONNX rounds halves to even, PyTorch's nearest grid sampling does not promise the same tie-breaking
        raise unsupported(node, "GridSample mode='nearest' (tie rounding differs from ONNX's)")
    return GridSample(node, _GRID_MODES[mode], padding, bool(a.get("align_corners", 0)))
