"""The illumination network published with CLIP-LIT (Liang et al., ICCV 2023) and reused by RAVE.

A small fully convolutional body (residual blocks at 32 and 64 channels, reflect padding) with one pyramid pooling
module (bins 1, 2, 3, 6) predicts a per-pixel illumination map ``L >= 0``; the enhanced image is ``I / L``. Attribute
names follow the published state dicts (``cond1``, ``ResidualBlock1`` ..., ``PPM1.features.0.1``), so the
authors' checkpoints load with ``strict=True`` once the DataParallel ``module.`` prefix is stripped.

The forward pass is split into ``stem`` -> ``pool`` -> ``head`` so that tiled inference (``tiling.py``) can compute
the pyramid pooling's global context once over the whole image and hand it to every tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BINS: tuple[int, ...] = (1, 2, 3, 6)
# Pixels of context each output pixel depends on, per side: every 3x3 convolution widens it by one.
STEM_RADIUS = 5  # cond1 + 2 residual blocks of 2 convs
HEAD_RADIUS = 12  # PPM fuse + condx + 2 blocks + condy + 2 blocks + cond_add1
RECEPTIVE_RADIUS = STEM_RADIUS + HEAD_RADIUS


def _conv3x3(cin: int, cout: int, bias: bool, padding_mode: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=bias, padding_mode=padding_mode)


class ResidualBlock(nn.Module):
    """Two bias-free 3x3 reflect-padded convs with LeakyReLU(0.2) and an identity skip (published layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels, False, "reflect")
        self.conv2 = _conv3x3(channels, channels, False, "reflect")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(out + x, 0.2)


class PyramidPooling(nn.Module):
    """PSPNet-style pyramid pooling: average-pool to b x b, 1x1 conv + PReLU, upsample, concatenate, fuse.

    ``features[i]`` is ``Sequential(AdaptiveAvgPool2d, Conv2d, PReLU)`` and ``fuse`` is ``Sequential(Conv2d, PReLU)``
    to keep the published key names; the fuse conv pads with zeros, as published.
    """

    def __init__(self, in_dim: int = 32, reduction_dim: int = 8, bins: tuple[int, ...] = BINS) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_dim, reduction_dim, 1, bias=False), nn.PReLU())
            for b in self.bins
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(in_dim + reduction_dim * len(self.bins), in_dim, 3, padding=1, bias=False), nn.PReLU()
        )

    def project(self, pooled: list[Tensor]) -> list[Tensor]:
        """Apply each branch's 1x1 conv + PReLU to already pooled maps (B, C, b, b)."""
        return [f[2](f[1](p)) for f, p in zip(self.features, pooled)]

    def context(self, x: Tensor) -> list[Tensor]:
        """Global context of a whole feature map: one (B, reduction, b, b) tensor per bin."""
        return [f(x) for f in self.features]

    def forward(self, x: Tensor, context: list[Tensor] | None = None, window: Window | None = None) -> Tensor:
        """Fuse ``x`` with the upsampled context.

        ``context``/``window`` let a tile of a larger image use the context of the whole image: ``window`` gives
        where ``x`` sits in the full image, so the bilinear upsampling (align_corners=True) is evaluated at the
        tile's own pixel coordinates of the full-size grid.
        """
        if context is None:
            context = self.context(x)
        if window is None:
            ups = [F.interpolate(c, x.shape[-2:], mode="bilinear", align_corners=True) for c in context]
        else:
            ups = [upsample_window(c, window) for c in context]
        return self.fuse(torch.cat([x, *ups], 1))


# (top, left, height, width) of a tile inside the full image, plus the full (H, W).
Window = tuple[int, int, int, int, int, int]


def _axis_weights(n_src: int, n_full: int, start: int, length: int, device, dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Indices and weights of align_corners=True linear interpolation for output positions start..start+length."""
    pos = torch.arange(start, start + length, device=device, dtype=torch.float64)
    scale = (n_src - 1) / (n_full - 1) if n_full > 1 else 0.0
    src = pos * scale
    i0 = src.floor().long().clamp(0, n_src - 1)
    i1 = (i0 + 1).clamp(max=n_src - 1)
    w = (src - i0.double()).to(dtype)
    return i0, i1, w


def upsample_window(c: Tensor, window: Window) -> Tensor:
    """Bilinear (align_corners=True) upsampling of ``c`` to the full size, evaluated only inside ``window``.

    Equals ``F.interpolate(c, (H, W), 'bilinear', align_corners=True)[..., top:top+h, left:left+w]`` (checked in the
    tests) without materialising the full-size map.
    """
    top, left, h, w, full_h, full_w = window
    y0, y1, wy = _axis_weights(c.shape[-2], full_h, top, h, c.device, c.dtype)
    x0, x1, wx = _axis_weights(c.shape[-1], full_w, left, w, c.device, c.dtype)
    rows = c[..., y0, :] * (1 - wy)[:, None] + c[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


class EnhanceNet(nn.Module):
    """CLIP-LIT/RAVE illumination network: image in [0, 1] (B, 3, H, W) -> illumination map (B, out, H, W) >= 0.

    ``out_channels`` is 1 in every published checkpoint (one map broadcast over RGB). ``padding_mode`` applies to
    the four outer convs: both repositories' inference code uses ``"reflect"``; RAVE's training code built them with
    ``"zeros"`` (only the outermost pixels differ).
    """

    def __init__(self, out_channels: int = 1, padding_mode: str = "reflect") -> None:
        super().__init__()
        self.out_channels = out_channels
        self.padding_mode = padding_mode
        self.cond1 = _conv3x3(3, 32, True, padding_mode)
        self.cond_add1 = _conv3x3(32, out_channels, True, padding_mode)
        self.condx = _conv3x3(32, 64, True, padding_mode)
        self.condy = _conv3x3(64, 32, True, padding_mode)
        self.ResidualBlock1 = ResidualBlock(32)
        self.ResidualBlock2 = ResidualBlock(32)
        self.ResidualBlock3 = ResidualBlock(64)
        self.ResidualBlock4 = ResidualBlock(64)
        self.ResidualBlock5 = ResidualBlock(32)
        self.ResidualBlock6 = ResidualBlock(32)
        self.PPM1 = PyramidPooling(32, 8, BINS)

    def init_weights(self, generator: torch.Generator | None = None) -> EnhanceNet:
        """The authors' initialisation (conv weights ~ N(0, 0.02)), drawn from ``generator`` for reproducibility."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
        return self

    def stem(self, x: Tensor) -> Tensor:
        """Features fed to the pyramid pooling (depends on ``STEM_RADIUS`` pixels around each pixel)."""
        _check_image(x)
        return self.ResidualBlock2(self.ResidualBlock1(F.leaky_relu(self.cond1(x), 0.2)))

    def head(self, feat: Tensor, context: list[Tensor] | None = None, window: Window | None = None) -> Tensor:
        """Illumination map from stem features (and optionally a whole-image context, for tiles)."""
        h = self.condx(self.PPM1(feat, context, window))
        h = self.condy(self.ResidualBlock4(self.ResidualBlock3(h)))
        h = self.ResidualBlock6(self.ResidualBlock5(h))
        return F.relu(self.cond_add1(h))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stem(x))


def _check_image(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"reflect padding needs H, W >= 2, got {tuple(x.shape[-2:])}")


def apply_illumination(image: Tensor, light: Tensor, strength: float = 1.0, eps: float = 1e-9) -> Tensor:
    """Enhanced image ``clamp(I / L**strength, 0, 1)``, safe for black pixels and a zero illumination map.

    ``L`` is floored at ``eps`` (the authors add 1e-9 in training), so 0/0 gives 0 and x/0 saturates to 1 instead of
    NaN/Inf; any NaN left (from NaN inputs) becomes 0. ``strength`` scales the correction in log space: 0 is the
    identity, 1 the published behaviour, values above 1 push further (used by the "gentle"/"strong" presets).
    """
    light = light.clamp_min(eps)
    if strength != 1.0:
        light = light.pow(strength)
    out = (image / light).clamp(0, 1)
    return torch.nan_to_num(out, nan=0.0)
