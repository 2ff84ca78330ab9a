"""Inference plan of the illumination network: the same arithmetic as ``EnhanceNet``, arranged for the CPU.

``EnhanceNet`` is the network as the authors wrote it (plain modules, NCHW, reflect padding by ``F.pad``), kept for
training and as the reference. For inference ``FastNet`` runs the same weights as follows; each point was measured
(``bench/enhance.py speed``, ``docs/measured.md``) and kept only because it paid with outputs equal to ~1e-6:

- channels_last activations: oneDNN's convolutions work in NHWC; fed NCHW they reorder input and output on every
  call (1.5-2.5x slower per conv at 32/64 channels).
- each convolution carries its activation (LeakyReLU; PReLU, a LeakyReLU with the learnt slope; ReLU) or the
  residual add as a oneDNN post-op (after an add oneDNN fuses only ReLU: the block's LeakyReLU runs in place).
- no padded copies: every 3x3 conv pads with zeros inside oneDNN. Reflect padding differs from that only in the
  outermost ring of the output, which is recomputed from two-pixel strips on the sides that are image borders.
  On a tile's inner sides the ring is simply wrong, one more pixel per conv, and the tiler (``tiling.py``) crops
  a halo of the network's receptive radius there, so tiles equal the whole-image result.

- the pyramid pooling's context is pooled as the reference pools (``pool_like_reference``) and upsampled inside
  the tile with small matmuls, written straight into the fuse conv's input (no gather, no separate cat).

Without oneDNN (another device or dtype) the same plan runs on ``F.conv2d`` with separate activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .network import EnhanceNet, ResidualBlock, Window, _axis_weights, _check_image

CL = torch.channels_last
# (top, bottom, left, right): which sides of a tile are borders of the whole image.
Borders = tuple[bool, bool, bool, bool]
ALL_BORDERS: Borders = (True, True, True, True)


@dataclass
class _Conv:
    """A 3x3 stride-1 conv followed by an optional residual add and an optional leaky slope (0 = ReLU)."""

    weight: Tensor
    bias: Tensor | None
    reflect: bool
    slope: float | None


def _conv(m: nn.Conv2d, slope: float | None) -> _Conv:
    if m.kernel_size != (3, 3) or m.stride != (1, 1) or m.padding != (1, 1) or m.groups != 1:
        raise ValueError(f"FastNet expects 3x3 stride-1 convs padded by 1, got {m}")
    bias = None if m.bias is None else m.bias.detach()
    return _Conv(m.weight.detach().contiguous(memory_format=CL), bias, m.padding_mode == "reflect", slope)


def _slope(prelu: nn.PReLU) -> float:
    if prelu.weight.numel() != 1:
        raise ValueError("FastNet fuses a PReLU with one shared slope (as published)")
    return float(prelu.weight.item())


def onednn_usable(x: Tensor) -> bool:
    """oneDNN's fused convolutions apply: CPU, float32, PyTorch built with mkldnn and not disabled."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


class FastNet:
    """A snapshot of an ``EnhanceNet``'s weights with a forward pass split into ``stem`` and ``head`` for tiles.

    Build one per call (it copies 0.28 M parameters): it does not follow later changes to the network's weights.
    """

    def __init__(self, net: EnhanceNet, fused: bool | None = None) -> None:
        self.out_channels = net.out_channels
        self.ppm = net.PPM1
        self.fused = fused
        self.cond1 = _conv(net.cond1, 0.2)
        self.stem_blocks = [self._block(net.ResidualBlock1), self._block(net.ResidualBlock2)]
        self.fuse = _conv(net.PPM1.fuse[0], _slope(net.PPM1.fuse[1]))
        self.condx = _conv(net.condx, None)
        self.blocks64 = [self._block(net.ResidualBlock3), self._block(net.ResidualBlock4)]
        self.condy = _conv(net.condy, None)
        self.blocks32 = [self._block(net.ResidualBlock5), self._block(net.ResidualBlock6)]
        self.out = _conv(net.cond_add1, 0.0)

    @staticmethod
    def _block(rb: ResidualBlock) -> tuple[_Conv, _Conv]:
        return _conv(rb.conv1, 0.2), _conv(rb.conv2, 0.2)

    # -- one conv ------------------------------------------------------------------------------------------------
    def _op(self, c: _Conv, x: Tensor, pad: int, residual: Tensor | None) -> Tensor:
        fused = onednn_usable(x) if self.fused is None else self.fused
        if fused:
            p = [pad, pad]
            if residual is None:
                attr, scalars = ("none", []) if c.slope is None else \
                    ("relu", []) if c.slope == 0 else ("leaky_relu", [c.slope])
                return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, p, [1, 1], [1, 1], 1,
                                                               attr, scalars, None)
            y = torch.ops.mkldnn._convolution_pointwise.binary(x, residual, c.weight, c.bias, p, [1, 1], [1, 1], 1,
                                                               "add", None, None, [], None)
        else:
            y = F.conv2d(x, c.weight, c.bias, padding=pad)
            if residual is not None:
                y += residual
        if c.slope is not None and not (fused and residual is None):
            y = F.relu_(y) if c.slope == 0 else F.leaky_relu_(y, c.slope)
        return y

    def conv(self, c: _Conv, x: Tensor, borders: Borders, residual: Tensor | None = None) -> Tensor:
        """``c`` applied to ``x`` with the output's size; exact on border sides, one ring wrong on inner sides."""
        y = self._op(c, x, 1, residual)
        if not c.reflect:
            return y
        top, bottom, left, right = borders
        # The outermost output ring is all that reflect padding changes: redo it from reflect-padded strips.
        a, all_, z = slice(0, 2), slice(None), slice(-2, None)
        strips = ((top, (a, all_), (1, 1, 1, 0), (slice(0, 1), all_)),
                  (bottom, (z, all_), (1, 1, 0, 1), (slice(-1, None), all_)),
                  (left, (all_, a), (1, 0, 1, 1), (all_, slice(0, 1))),
                  (right, (all_, z), (0, 1, 1, 1), (all_, slice(-1, None))))
        for on, (sh, sw), pad, (dh, dw) in strips:
            if on:
                res = None if residual is None else residual[..., dh, dw]
                y[..., dh, dw] = self._op(c, F.pad(x[..., sh, sw], pad, mode="reflect"), 0, res)
        return y

    def block(self, convs: tuple[_Conv, _Conv], x: Tensor, borders: Borders) -> Tensor:
        return self.conv(convs[1], self.conv(convs[0], x, borders), borders, residual=x)

    # -- the network -----------------------------------------------------------------------------------------------
    def stem(self, x: Tensor, borders: Borders = ALL_BORDERS) -> Tensor:
        """``EnhanceNet.stem`` in channels_last (wrong within ``STEM_RADIUS`` of inner sides)."""
        _check_image(x)
        h = self.conv(self.cond1, x.contiguous(memory_format=CL), borders)
        for b in self.stem_blocks:
            h = self.block(b, h, borders)
        return h

    def context(self, feat: Tensor) -> list[Tensor]:
        """The pyramid pooling's context of whole-image features, pooled as the reference pools them."""
        return self.ppm.project(pool_like_reference(feat, self.ppm.bins))

    def ppm_input(self, feat: Tensor, context: list[Tensor] | None = None, window: Window | None = None) -> Tensor:
        """``cat([feat, upsampled context...])`` as one channels_last tensor, built in place.

        The context maps are upsampled by two small matmuls with the interpolation matrices of the window
        (``network.upsample_window``'s weights): a gather per pixel cost as much as two convolutions' worth of
        overhead, and the separate cat another pass.
        """
        B, C, h, w = feat.shape
        if context is None:
            context = self.context(feat)
        top, left, _, _, H, W = (0, 0, h, w, h, w) if window is None else window
        n, m = sum(c.shape[1] for c in context), sum(c.shape[-1] for c in context)
        # All bins in one product: rows (B, h, sum b, n) block-diagonal over (bin columns, bin channels).
        rows = feat.new_zeros(B, h, m, n)
        rx = feat.new_empty(w, m)
        j = k = 0
        for c in context:
            ry = interpolation_matrix(c.shape[-2], H, top, h, c)
            rx[:, j : j + c.shape[-1]] = interpolation_matrix(c.shape[-1], W, left, w, c)
            rows[:, :, j : j + c.shape[-1], k : k + c.shape[1]] = torch.einsum("yi,bcij->byjc", ry, c)
            j, k = j + c.shape[-1], k + c.shape[1]
        buf = feat.new_empty(B, h, w, C + n)
        buf[..., :C] = feat.permute(0, 2, 3, 1)
        buf[..., C:] = torch.matmul(rx, rows)  # (w, sum b) @ (B, h, sum b, n) -> (B, h, w, n)
        return buf.permute(0, 3, 1, 2)

    def head(self, feat: Tensor, context: list[Tensor] | None = None, window: Window | None = None,
             borders: Borders = ALL_BORDERS) -> Tensor:
        """``EnhanceNet.head`` (wrong within ``HEAD_RADIUS`` of inner sides); ``window`` places a tile (network.py)."""
        h = self.conv(self.condx, self.conv(self.fuse, self.ppm_input(feat, context, window), borders), borders)
        for b in self.blocks64:
            h = self.block(b, h, borders)
        h = self.conv(self.condy, h, borders)
        for b in self.blocks32:
            h = self.block(b, h, borders)
        return self.conv(self.out, h, borders)

    def __call__(self, x: Tensor) -> Tensor:
        """Whole image at once, like ``EnhanceNet.forward``."""
        return self.head(self.stem(x))


def pool_like_reference(feat: Tensor, bins: tuple[int, ...]) -> list[Tensor]:
    """``AdaptiveAvgPool2d(b)`` of each bin, rounded as the reference network's own pooling rounds.

    PyTorch pools a contiguous NCHW map cell by cell with a float32 running sum (mean for b = 1): on a 3 MP photo
    that is up to 1.5e-3 off the exact average, enough to move outputs by 2.5e-5. Pooling an NCHW copy repeats
    that arithmetic bit for bit, so the outputs stay within ~1e-6 of the reference's. The copy of channels_last
    features is one (H*W, C) matrix transpose per image (0.5 s for 3 MP; a channels_last -> NCHW ``contiguous``
    takes 3x longer), and it lives only while pooling.
    """
    B, C, H, W = feat.shape
    pooled: list[list[Tensor]] = [[] for _ in bins]
    for i in range(B):
        item = feat[i : i + 1]
        nhwc = item.permute(0, 2, 3, 1)
        if nhwc.is_contiguous() and not item.is_contiguous():
            item = nhwc.reshape(H * W, C).t().contiguous().view(1, C, H, W)
        for out, b in zip(pooled, bins):
            out.append(F.adaptive_avg_pool2d(item.contiguous(), b))
    return [torch.cat(p) for p in pooled]


def interpolation_matrix(n_src: int, n_full: int, start: int, length: int, like: Tensor) -> Tensor:
    """(length, n_src) weights of align_corners=True linear interpolation from ``n_src`` to ``n_full`` samples, for
    output positions ``start .. start + length``; ``m @ v`` equals ``upsample_window`` along one axis."""
    i0, i1, w = _axis_weights(n_src, n_full, start, length, like.device, like.dtype)
    m = torch.zeros(length, n_src, device=like.device, dtype=like.dtype)
    rows = torch.arange(length, device=like.device)
    m.index_put_((rows, i0), 1 - w, accumulate=True)
    m.index_put_((rows, i1), w, accumulate=True)
    return m
