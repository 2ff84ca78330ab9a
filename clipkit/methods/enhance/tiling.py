"""Tiled inference for the illumination network, so memory stays bounded on large photos.

The network is convolutional except for one pyramid pooling module, whose adaptive average pools see the whole
feature map. Tiles therefore agree with the untiled result only if every tile uses the *whole image's* pooled
context. We compute it exactly, in two passes:

1. context pass: run the stem (the layers before the pooling) tile by tile, each tile padded by the stem's receptive
   radius so its core features are exact, and accumulate, for every pooling cell of bins 1, 2, 3, 6, the sum of the
   features falling inside it (float64). Dividing by the cell areas gives exactly ``AdaptiveAvgPool2d`` of the
   full-image features; each branch's 1x1 conv + PReLU then runs on these small maps.
2. head pass: each tile, padded by the full receptive radius plus a blending band, runs stem + head with that
   context upsampled at the tile's own coordinates of the full-size grid (``network.upsample_window``).

Each tile's output is weighted 0 within the receptive radius of an inner edge (where padding differs from the
full image), ramping to 1 over the blending band, and the weighted outputs are averaged. With the exact context the
tiles agree to float precision (tested), and the ramp keeps seams invisible should a caller pass an approximate
context (``context="downscaled"``, one cheap pass on a downscaled copy of the image).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import RECEPTIVE_RADIUS, STEM_RADIUS, EnhanceNet, apply_illumination


def _starts(n: int, tile: int) -> Iterator[tuple[int, int]]:
    """Core intervals [a, b) covering 0..n in steps of ``tile``."""
    for a in range(0, n, tile):
        yield a, min(a + tile, n)


def _cells(n: int, b: int) -> list[tuple[int, int]]:
    """AdaptiveAvgPool's cell i covers [floor(i n / b), ceil((i + 1) n / b))."""
    return [(math.floor(i * n / b), math.ceil((i + 1) * n / b)) for i in range(b)]


@torch.no_grad()
def exact_context(net: EnhanceNet, x: Tensor, tile: int) -> list[Tensor]:
    """Pyramid-pooling context of the whole image, computed tile by tile (see module docstring, pass 1)."""
    B, _, H, W = x.shape
    bins = net.PPM1.bins
    C = net.ResidualBlock2.conv2.out_channels
    sums = [torch.zeros(B, C, b, b, dtype=torch.float64, device=x.device) for b in bins]
    cells = [(_cells(H, b), _cells(W, b)) for b in bins]
    r = STEM_RADIUS
    for y0, y1 in _starts(H, tile):
        for x0, x1 in _starts(W, tile):
            ey0, ey1, ex0, ex1 = max(y0 - r, 0), min(y1 + r, H), max(x0 - r, 0), min(x1 + r, W)
            feat = net.stem(x[..., ey0:ey1, ex0:ex1])[..., y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0].double()
            for s, (rows, cols) in zip(sums, cells):
                for i, (hs, he) in enumerate(rows):
                    r0, r1 = max(hs, y0), min(he, y1)
                    if r0 >= r1:
                        continue
                    band = feat[..., r0 - y0 : r1 - y0, :]
                    for j, (ws, we) in enumerate(cols):
                        c0, c1 = max(ws, x0), min(we, x1)
                        if c0 < c1:
                            s[:, :, i, j] += band[..., c0 - x0 : c1 - x0].sum((-2, -1))
    pooled = []
    for s, (rows, cols) in zip(sums, cells):
        area = torch.tensor([[(he - hs) * (we - ws) for ws, we in cols] for hs, he in rows], dtype=torch.float64)
        pooled.append((s / area.to(s.device)).to(x.dtype))
    return net.PPM1.project(pooled)


@torch.no_grad()
def downscaled_context(net: EnhanceNet, x: Tensor, max_side: int = 512) -> list[Tensor]:
    """Approximate context from one pass on a copy downscaled to ``max_side`` (cheaper, not exact)."""
    H, W = x.shape[-2:]
    s = min(1.0, max_side / max(H, W))
    small = F.interpolate(x, scale_factor=s, mode="area") if s < 1 else x
    return net.PPM1.context(net.stem(small))


def _ramp(n: int, lo_inner: bool, hi_inner: bool, dead: int, blend: int, device) -> Tensor:
    """1-D weight: 0 for ``dead`` pixels at an inner edge, linear to 1 over ``blend``, 1 elsewhere."""
    w = torch.ones(n, device=device)
    idx = torch.arange(n, device=device, dtype=torch.float32)
    if lo_inner:
        w = torch.minimum(w, ((idx - dead + 1) / (blend + 1)).clamp(0, 1))
    if hi_inner:
        w = torch.minimum(w, ((n - 1 - idx - dead + 1) / (blend + 1)).clamp(0, 1))
    return w


@torch.no_grad()
def illumination(
    net: EnhanceNet,
    x: Tensor,
    tile: int | None = None,
    blend: int = 16,
    context: str | list[Tensor] = "exact",
) -> Tensor:
    """Illumination map of ``x`` (B, 3, H, W) in [0, 1]; tiled with ``tile``-pixel cores when the image is larger.

    ``context``: ``"exact"`` (tiles agree with the untiled result), ``"downscaled"``, or precomputed tensors.
    """
    H, W = x.shape[-2:]
    if tile is None or (H <= tile and W <= tile):
        return net(x)
    if tile < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    if context == "exact":
        context = exact_context(net, x, tile)
    elif context == "downscaled":
        context = downscaled_context(net, x)
    elif isinstance(context, str):
        raise ValueError(f"context must be 'exact', 'downscaled' or tensors, got {context!r}")
    dead, m = RECEPTIVE_RADIUS, RECEPTIVE_RADIUS + blend
    acc = torch.zeros(x.shape[0], net.out_channels, H, W, device=x.device, dtype=x.dtype)
    wsum = torch.zeros(1, 1, H, W, device=x.device, dtype=x.dtype)
    for y0, y1 in _starts(H, tile):
        for x0, x1 in _starts(W, tile):
            ey0, ey1, ex0, ex1 = max(y0 - m, 0), min(y1 + m, H), max(x0 - m, 0), min(x1 + m, W)
            window = (ey0, ex0, ey1 - ey0, ex1 - ex0, H, W)
            out = net.head(net.stem(x[..., ey0:ey1, ex0:ex1]), context, window)
            wy = _ramp(ey1 - ey0, ey0 > 0, ey1 < H, dead, blend, x.device)
            wx = _ramp(ex1 - ex0, ex0 > 0, ex1 < W, dead, blend, x.device)
            w = (wy[:, None] * wx[None, :]).to(x.dtype)
            acc[..., ey0:ey1, ex0:ex1] += out * w
            wsum[..., ey0:ey1, ex0:ex1] += w
    return acc / wsum


@torch.no_grad()
def enhance_tensor(
    net: EnhanceNet, x: Tensor, tile: int | None = None, strength: float = 1.0, **kw
) -> tuple[Tensor, Tensor]:
    """(enhanced image, illumination map) at full resolution; see ``illumination`` for tiling options."""
    light = illumination(net, x, tile=tile, **kw)
    return apply_illumination(x, light, strength), light
