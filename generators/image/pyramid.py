"""A multi-scale (Laplacian-pyramid-like) image parameterisation.

Optimising raw pixels against CLIP gives high-frequency noise; summing upsampled levels from 4 px up to
the output size lets coarse structure move first, since one coarse parameter moves many pixels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PyramidImage(nn.Module):
    """Image = sigmoid(sum_k upsample(level_k)); levels from `min_size` doubling up to `size`."""

    def __init__(self, size: int, batch: int = 1, min_size: int = 4, init_std: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = []
        s = size
        while s >= min_size:
            sizes.append(s)
            s //= 2
        self.size = size
        self.levels = nn.ParameterList(
            nn.Parameter(torch.randn(batch, 3, s, s, generator=generator) * init_std / len(sizes))
            for s in reversed(sizes)
        )

    def forward(self) -> torch.Tensor:
        total = 0
        for level in self.levels:
            total = total + F.interpolate(level, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(total)
