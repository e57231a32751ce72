"""Training-time augmentation that says what it did: random flips and shifts, and ``Moves``, so whatever is drawn
on the images (landmarks) moves with them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Moves:
    """What ``augment`` did to each image, so whatever is drawn on the image (landmarks) can move with it: a
    horizontal flip, then a crop at offset (dy, dx) of the image edge-padded by ``shift``."""

    flip: torch.Tensor  # (N,) bool
    dy: torch.Tensor    # (N,) in [0, 2 shift]
    dx: torch.Tensor
    shift: int
    size: tuple[int, int]

    def rows(self, sl: slice) -> Moves:
        """The moves of the samples ``sl`` (one rank's slice of the global batch)."""
        return Moves(self.flip[sl], self.dy[sl], self.dx[sl], self.shift, self.size)

    def points(self, p: torch.Tensor, mirror: list[int]) -> torch.Tensor:
        """Landmarks (N, K, 2) in [0, 1] moved as the images were; ``mirror`` swaps left and right points on a flip."""
        h, w = self.size
        flipped = torch.stack([1.0 - p[..., 0], p[..., 1]], -1)[:, mirror]
        p = torch.where(self.flip[:, None, None].to(p.device), flipped, p)
        off = torch.stack([(self.dx - self.shift) / w, (self.dy - self.shift) / h], -1).to(p)
        return p - off[:, None]


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> tuple[torch.Tensor, Moves]:
    """Random horizontal flips and shifts of up to ``shift`` pixels (edge-padded), and what was done."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dy = dx = torch.full((n,), shift)
    if shift:
        p = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        x = torch.stack([p[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x, Moves(flip, dy, dx, shift, (h, w))
