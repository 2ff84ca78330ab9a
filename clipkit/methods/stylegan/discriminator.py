"""StyleGAN2 discriminator (Karras et al., CVPR 2020, config E/F: the residual architecture).

``fromRGB`` (a 1x1 conv) at full resolution, then one residual block per resolution down to 4 px (two 3x3 convs,
the second one blurred and strided; a blurred, strided 1x1 skip without bias; the sum scaled by 1/sqrt(2)), the
minibatch standard deviation layer (Karras et al. 2018: one extra feature map, the mean over features and pixels of
the standard deviation over a group of samples), a 3x3 conv, then two equalised-lr linear layers to one logit.

Downsampling is "blur-pool": the [1, 3, 3, 1] FIR low-pass (``upfirdn2d``) then a stride-2 conv, as in both
reference implementations. Every conv and linear layer has an equalised learning rate (weights stored N(0, 1),
scaled by 1/sqrt(fan_in) at run time). Module and parameter names follow rosinality's stylegan2-pytorch port
(``convs.0.0.weight``, ``convs.1.conv2.0.kernel``, ``convs.1.skip.1.weight``, ``final_conv.1.bias``,
``final_linear.0.weight`` ...), so a port training checkpoint's ``d`` loads with ``load_state_dict(strict=True)``.

The building blocks (``EqualLinear``, ``Blur``, ``FusedLeakyReLU``, ``make_kernel``, ``upfirdn2d``) are the
generator's, from ``network.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipkit.guidance.errors import ParameterError
from clipkit.methods.stylegan.network import (
    DEFAULT_BLUR,
    Blur,
    EqualLinear,
    FusedLeakyReLU,
    default_channels,
    resolutions,
)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: weight stored N(0, 1), multiplied by 1/sqrt(in * k * k) at run time."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size, generator=generator))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out, cin, k, _ = self.weight.shape
        return f"{cin}, {out}, {k}, stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [bias, leaky ReLU, gain sqrt(2)], a Sequential so the port's indices hold.

    With ``downsample`` the input is low-passed by the FIR kernel (padded so the strided conv's output is exactly
    half the size) and the conv has stride 2 and no padding. The bias lives in the activation when there is one.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        bias: bool = True,
        activate: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_channel,
                out_channel,
                kernel_size,
                stride=stride,
                padding=padding,
                bias=bias and not activate,
                generator=generator,
            )
        )
        if activate:
            if not bias:
                raise ParameterError("a ConvLayer with an activation carries its bias there; bias=False unsupported")
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs (the second downsamples) plus a downsampling 1x1 skip, summed with gain 1/sqrt(2)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, generator=generator)
        self.conv2 = ConvLayer(
            in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel, generator=generator
        )
        self.skip = ConvLayer(
            in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False,
            generator=generator,
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1) -> Tensor:
    """Append ``num_features`` maps: per group of samples, the std over the group, averaged over channels (of each
    feature's channel slice) and pixels, broadcast to every pixel of every sample of the group.

    Sample ``i`` belongs to group ``i % (B / G)`` (the reference layout). ``G = min(group_size, B)``, lowered to
    the largest divisor of ``B`` when that does not divide it (the references require it to divide).
    """
    b, c, h, w = x.shape
    if c % num_features:
        raise ParameterError(f"stddev features {num_features} must divide the channels ({c})")
    g = min(group_size, b)
    while b % g:
        g -= 1
    y = x.reshape(g, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # [B/G, F, C/F, H, W]
    y = y.mean([2, 3, 4]).reshape(-1, num_features, 1, 1)  # [B/G, F, 1, 1]
    y = y.repeat(g, 1, h, w)  # [B, F, H, W]: sample i gets group i % (B/G)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image ``[B, 3, size, size]`` in about [-1, 1] -> logits ``[B, 1]``.

    Args:
        size: input resolution, a power of 2 (>= 8: one residual block at least).
        channel_multiplier: as the generator's (the port's table: 512 up to 32 px, 256 * multiplier at 64 ...).
        blur_kernel: the FIR filter used before every strided conv.
        channels: ``{resolution: channels}`` overriding the table (small configs, tests).
        stddev_group: samples per minibatch-stddev group (4); ``stddev_feat``: its feature maps (1).
        seed: weights are initialised from a private ``torch.Generator`` (the global RNG is never touched).
    """

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        channels: Mapping[int, int] | None = None,
        stddev_group: int = 4,
        stddev_feat: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 8 or size & (size - 1):
            raise ParameterError(f"size must be a power of 2 >= 8, got {size!r}")
        if size > 2048 and channels is None:
            raise ParameterError(f"size {size} has no default channel table (max 2048); pass channels=")
        if stddev_group < 1 or stddev_feat < 1:
            raise ParameterError(f"stddev_group and stddev_feat must be >= 1, got {stddev_group}, {stddev_feat}")
        gen = torch.Generator().manual_seed(seed)
        table = default_channels(min(size, 2048), channel_multiplier) if size <= 2048 else {}
        table.update({int(k): int(v) for k, v in (channels or {}).items() if int(k) <= size})
        missing = [r for r in resolutions(size) if r not in table]
        if missing:
            raise ParameterError(f"channels has no entry for resolutions {missing}")
        self.size = size
        self.channel_multiplier = channel_multiplier
        self.blur_kernel = tuple(float(v) for v in blur_kernel)
        self.channels = {r: table[r] for r in resolutions(size)}
        self.stddev_group = stddev_group
        self.stddev_feat = stddev_feat
        ch = self.channels

        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1, generator=gen)]
        log_size = int(math.log2(size))
        in_channel = ch[size]
        for i in range(log_size, 2, -1):
            out_channel = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel, generator=gen))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_channel + stddev_feat, ch[4], 3, generator=gen)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu", generator=gen),
            EqualLinear(ch[4], 1, generator=gen),
        )

    @property
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-friendly apart from the int keys)."""
        return {
            "size": self.size,
            "channel_multiplier": self.channel_multiplier,
            "blur_kernel": list(self.blur_kernel),
            "channels": dict(self.channels),
            "stddev_group": self.stddev_group,
            "stddev_feat": self.stddev_feat,
        }

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, self.size, self.size):
            raise ParameterError(f"images must have shape [B, 3, {self.size}, {self.size}], got {tuple(x.shape)}")
        out = self.convs(x)
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))
