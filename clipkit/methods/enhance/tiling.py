"""Tiled inference for the illumination network: bounded memory, the whole-image result to float precision.

The network is convolutional except for one pyramid pooling module, whose adaptive average pools see the whole
feature map, so every tile must use the *whole image's* pooled context. Two passes compute it exactly:

1. context pass: the stem (the layers before the pooling) runs tile by tile, each tile grown by the stem's
   receptive radius on its inner sides. The exact cores go into a full-size feature map while that fits
   ``cache_bytes`` (pass 2 then need not recompute the stem), pooled as the reference pools; beyond that they are
   summed (float64) into every pooling cell of bins 1, 2, 3, 6 (``exact_context``).
2. head pass: each tile, grown by the head's receptive radius (the stem's too without the cache), runs the head
   with that context upsampled at the tile's own coordinates of the full-size grid (``network.upsample_window``).

``fast.FastNet`` pads with zeros inside the convolutions and repairs the reflect-padded ring only on the image's
borders, so a tile's output is wrong exactly within the receptive radius of its inner sides; that halo is cut off
and each core is written once (no blending: every tile computes the same function as the whole image).

Tiles of 320 were the fastest measured (``docs/measured.md``): the halo costs (320 + 2*12)^2 / 320^2 = 1.16x the
head's pixels, and a 64-channel activation of the grown tile (30 MB) stays below glibc's 32 MB mmap threshold, so
it is served from the heap again and again; larger tiles (and the whole image at once) get fresh mmapped pages for
every layer, and the page faults cost more than the smaller halo saves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .fast import FastNet
from .network import HEAD_RADIUS, STEM_RADIUS, EnhanceNet, apply_illumination

DEFAULT_TILE = 320
OnTile = Callable[[int, int], None]  # (tiles done, tiles in all), after each tile of either pass
CACHE_BYTES = 1 << 30  # keep the stem features (128 B per pixel) of images up to ~8 MP


def _starts(n: int, tile: int) -> Iterator[tuple[int, int]]:
    """Core intervals [a, b) of at most ``tile`` covering 0..n, as equal as possible (no thin last tile, whose
    halo would cost more than its core)."""
    k = -(-n // tile)
    for i in range(k):
        yield i * n // k, (i + 1) * n // k


def _cells(n: int, b: int) -> list[tuple[int, int]]:
    """AdaptiveAvgPool's cell i covers [floor(i n / b), ceil((i + 1) n / b))."""
    return [(math.floor(i * n / b), math.ceil((i + 1) * n / b)) for i in range(b)]


def _tiles(H: int, W: int, tile: int, r: int) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """(core y0, y1, x0, x1), (extended ey0, ey1, ex0, ex1): each core grown by ``r`` inside the image."""
    for y0, y1 in _starts(H, tile):
        for x0, x1 in _starts(W, tile):
            yield (y0, y1, x0, x1), (max(y0 - r, 0), min(y1 + r, H), max(x0 - r, 0), min(x1 + r, W))


def _borders(ey0: int, ey1: int, ex0: int, ex1: int, H: int, W: int) -> tuple[bool, bool, bool, bool]:
    return ey0 == 0, ey1 == H, ex0 == 0, ex1 == W


def _membership(cells: list[tuple[int, int]], lo: int, hi: int, start: int, length: int, like: Tensor) -> Tensor:
    """(len(cells), length) 0/1 matrix: position ``start + t`` lies in cell i and in the core [lo, hi)."""
    m = torch.zeros(len(cells), length, dtype=like.dtype, device=like.device)
    for i, (a, b) in enumerate(cells):
        a, b = max(a, lo), min(b, hi)
        if a < b:
            m[i, a - start : b - start] = 1
    return m


@torch.no_grad()
def exact_context(net: EnhanceNet | FastNet, x: Tensor, tile: int, cache_bytes: int = 0,
                  tick: Callable[[], None] | None = None) -> tuple[list[Tensor], Tensor | None]:
    """Pyramid-pooling context of the whole image computed tile by tile (module docstring, pass 1), and the
    full-size stem features when they fit ``cache_bytes`` (else ``None``).

    With the cache, the pooling runs on it as the reference's does (``fast.pool_like_reference``: outputs within
    ~1e-6 of the authors'). Without it, a tile's sums over all pooling cells are two matmuls with 0/1 membership
    matrices (rows, then columns; the halo has weight 0), added up over tiles in float64: the exact average, which
    the reference's float32 pooling misses by up to ~1e-3 relative (outputs then differ by ~3e-5).
    """
    fast = net if isinstance(net, FastNet) else FastNet(net)
    B, _, H, W = x.shape
    bins = fast.ppm.bins
    C = fast.cond1.weight.shape[0]
    row_cells = [c for b in bins for c in _cells(H, b)]
    col_cells = [c for b in bins for c in _cells(W, b)]
    sums = torch.zeros(B, C, len(row_cells), len(col_cells), dtype=torch.float64, device=x.device)
    cache = None
    if B * C * H * W * x.element_size() <= cache_bytes:
        cache = torch.empty(B, H, W, C, device=x.device, dtype=x.dtype).permute(0, 3, 1, 2)  # channels_last
    for (y0, y1, x0, x1), (ey0, ey1, ex0, ex1) in _tiles(H, W, tile, STEM_RADIUS):
        feat = fast.stem(x[..., ey0:ey1, ex0:ex1], _borders(ey0, ey1, ex0, ex1, H, W))
        if tick is not None:
            tick()
        if cache is not None:
            cache[..., y0:y1, x0:x1] = feat[..., y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
            continue
        ay = _membership(row_cells, y0, y1, ey0, ey1 - ey0, feat)
        ax = _membership(col_cells, x0, x1, ex0, ex1 - ex0, feat)
        nhwc = feat.permute(0, 2, 3, 1).reshape(B, ey1 - ey0, -1)  # a view: feat is channels_last
        rows = torch.matmul(ay, nhwc).view(B, len(row_cells), ex1 - ex0, C)
        sums += torch.einsum("jx,bixc->bcij", ax, rows).double()
    if cache is not None:
        return fast.context(cache), cache
    pooled, r0, c0 = [], 0, 0
    for b in bins:
        rows, cols = _cells(H, b), _cells(W, b)
        area = torch.tensor([[(he - hs) * (we - ws) for ws, we in cols] for hs, he in rows], dtype=torch.float64)
        pooled.append((sums[..., r0 : r0 + b, c0 : c0 + b] / area.to(sums.device)).to(x.dtype))
        r0, c0 = r0 + b, c0 + b
    return fast.ppm.project(pooled), cache


@torch.no_grad()
def downscaled_context(net: EnhanceNet | FastNet, x: Tensor, max_side: int = 512) -> list[Tensor]:
    """Approximate context from one pass on a copy downscaled to ``max_side`` (cheaper, not exact)."""
    fast = net if isinstance(net, FastNet) else FastNet(net)
    H, W = x.shape[-2:]
    s = min(1.0, max_side / max(H, W))
    small = F.interpolate(x, scale_factor=s, mode="area") if s < 1 else x
    return fast.context(fast.stem(small))


@torch.no_grad()
def illumination(
    net: EnhanceNet,
    x: Tensor,
    tile: int | None = None,
    context: str | list[Tensor] = "exact",
    cache_bytes: int = CACHE_BYTES,
    on_tile: OnTile | None = None,
) -> Tensor:
    """Illumination map of ``x`` (B, 3, H, W) in [0, 1]; tiled with ``tile``-pixel cores when the image is larger.

    ``context``: ``"exact"`` (tiles agree with the untiled result), ``"downscaled"``, or precomputed tensors.
    Memory: one tile's activations (~1 KB per pixel of the grown tile) plus the stem cache (``cache_bytes`` at most).
    ``on_tile(done, total)`` follows the tiles of both passes (a 3 MP photo takes seconds: progress and a place
    to stop; an exception it raises ends the call).
    """
    if isinstance(context, str) and context not in ("exact", "downscaled"):
        raise ValueError(f"context must be 'exact', 'downscaled' or tensors, got {context!r}")
    fast = FastNet(net)
    H, W = x.shape[-2:]
    if tile is None or (H <= tile and W <= tile):  # one piece: its own context is the exact one
        return fast.head(fast.stem(x), None if isinstance(context, str) else context)
    if tile < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    cache = None
    tiles = sum(1 for _ in _tiles(H, W, tile, 0))
    passes = 2 if isinstance(context, str) and context == "exact" else 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_tile is not None:
            on_tile(done, passes * tiles)

    if context == "exact":
        context, cache = exact_context(fast, x, tile, cache_bytes, tick)
    elif context == "downscaled":
        context = downscaled_context(fast, x)
    out = torch.empty(x.shape[0], net.out_channels, H, W, device=x.device, dtype=x.dtype)
    r = HEAD_RADIUS if cache is not None else HEAD_RADIUS + STEM_RADIUS
    for (y0, y1, x0, x1), (ey0, ey1, ex0, ex1) in _tiles(H, W, tile, r):
        borders = _borders(ey0, ey1, ex0, ex1, H, W)
        if cache is not None:
            feat = cache[..., ey0:ey1, ex0:ex1]  # a view: the head's first step copies it next to the context
        else:
            feat = fast.stem(x[..., ey0:ey1, ex0:ex1], borders)
        light = fast.head(feat, context, (ey0, ex0, ey1 - ey0, ex1 - ex0, H, W), borders)
        out[..., y0:y1, x0:x1] = light[..., y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
        tick()
    return out


@torch.no_grad()
def enhance_tensor(
    net: EnhanceNet, x: Tensor, tile: int | None = None, strength: float = 1.0, **kw
) -> tuple[Tensor, Tensor]:
    """(enhanced image, illumination map) at full resolution; see ``illumination`` for tiling options."""
    light = illumination(net, x, tile=tile, **kw)
    return apply_illumination(x, light, strength), light
