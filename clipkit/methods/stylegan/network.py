"""StyleGAN2 generator (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020).

Plain PyTorch, fp32, no compiled extensions: upfirdn2d and the fused bias + leaky ReLU are written with native ops,
with the same math as the reference kernels. Module and parameter names follow rosinality's stylegan2-pytorch port
(``style.1.weight``, ``conv1.conv.modulation.weight``, ``convs.0.conv.blur.kernel``, ``to_rgbs.0.upsample.kernel``,
``noises.noise_0`` ...), so a port checkpoint's ``g_ema`` loads with ``load_state_dict(strict=True)``. NVIDIA's
official pickles are renamed onto the same modules by ``checkpoints.py``.

Latent spaces (B = batch; D = ``style_dim``):

* Z ``[B, D]``: Gaussian input of the mapping network (PixelNorm, then ``n_mlp`` EqualLinear + leaky ReLU layers
  with learning-rate multiplier ``lr_mlp``).
* W ``[B, D]``: the mapping's output; one vector drives every layer.
* W+ ``[B, n_latent, D]``, ``n_latent = 2 * log2(size) - 2``: one w per layer. The synthesis has
  ``2 * log2(size) - 3`` modulated 3x3 convs; conv ``i`` reads ``w[:, i]`` and each ToRGB reads the w of the next
  block's first conv, so the last ToRGB needs one extra: convs + 1 = ``2 * log2(size) - 2``.
* S (StyleSpace, Wu et al. 2021): the per-layer style vectors, i.e. the output of each layer's affine
  ("modulation") layer, ``s = A(w)``, before any weight gain: a list of ``3 * log2(size) - 4`` tensors ``[B, C_in]``
  in synthesis order (``conv1``, ``to_rgb1``, then per resolution ``convs.2j``, ``convs.2j+1``, ``to_rgbs.j``).
  ``Generator.style_layers`` names them. Editing S changes one layer's channel scales, nothing else.

Images come out in roughly [-1, 1] (no tanh, as in both reference implementations).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipkit.guidance.errors import ParameterError

SQRT2 = math.sqrt(2.0)
DEFAULT_BLUR = (1, 3, 3, 1)
NOISE_MODES = ("const", "random", "none")
# Channels per resolution at channel_multiplier 1 above 32 px (the port's table; 2048 continues the halving).
_CHANNELS_PER_MULTIPLIER = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}


def resolutions(size: int) -> list[int]:
    """The synthesis resolutions 4, 8, ..., size."""
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


def default_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The port's channel table: 512 up to 32 px, then ``256 * channel_multiplier / (res / 64)``.

    Equals NVIDIA's ``min(channel_base // res, 512)`` with ``channel_base = 16384 * channel_multiplier``.
    """
    out = {}
    for res in resolutions(size):
        out[res] = 512 if res <= 32 else _CHANNELS_PER_MULTIPLIER[res] * channel_multiplier
    return out


def make_kernel(k: Sequence[float] | Tensor) -> Tensor:
    """A 1-D kernel becomes its outer product; either way normalised to sum 1 (unit DC gain)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D FIR ``kernel`` (a true convolution: flipped), decimate.

    ``pad = (before, after)`` applies to both axes, negative values crop. Same operation as the port's
    ``upfirdn2d_native`` and NVIDIA's ``_upfirdn2d_ref`` (each channel filtered separately, zeros outside).
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    if p0 > 0 or p1 > 0:
        x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fused_leaky_relu(
    x: Tensor, bias: Tensor | None, negative_slope: float = 0.2, scale: float = SQRT2, clamp: float | None = None
) -> Tensor:
    """``leaky_relu(x + bias) * scale``, then optionally clamped to ``[-clamp, clamp]`` (NVIDIA's ``bias_act``)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    x = F.leaky_relu(x, negative_slope) * scale
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class PixelNorm(nn.Module):
    """Normalise each latent to unit second moment (NVIDIA's ``normalize_2nd_moment``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as N(0, 1) / lr_mul, scaled at run time.

    Effective weight ``weight * lr_mul / sqrt(in_dim)``, effective bias ``bias * lr_mul``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim, generator=generator).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, self.bias * self.lr_mul if self.bias is not None else None)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul if self.bias is not None else None)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class Blur(nn.Module):
    """FIR low-pass filter; after a 2x zero-insertion upsample the kernel is scaled by 4 to keep the DC gain."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor**2)
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (NVIDIA's ``upfirdn2d.upsample2d``): zero insertion, then the kernel times factor^2."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor**2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled by a style ``s`` (``[B, in_channel]``), optionally demodulated.

    Effective weight ``w'[b,o,i] = weight[o,i] / sqrt(in*k*k) * s[b,i]``; demodulation divides each output channel by
    ``sqrt(sum_{i,k} w'^2 + 1e-8)``. With ``upsample`` the conv is a stride-2 transposed convolution followed by the
    [1,3,3,1] blur (pad (1, 1), gain 4), exactly NVIDIA's ``conv2d_resample(up=2)``. ``forward`` takes the style
    (S space); ``self.modulation`` is the affine layer mapping w to s (bias initialised to 1).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        fused: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channel, in_channel, kernel_size, kernel_size, generator=generator)
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1, generator=generator)
        self.demodulate = demodulate
        self.fused = fused

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
            f"demodulate={self.demodulate}"
        )

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        batch, in_channel, height, width = x.shape
        if not self.fused:
            return self._forward_unfused(x, style)
        weight = self.scale * self.weight * style.view(batch, 1, in_channel, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt((weight * weight).sum([2, 3, 4]) + self.eps)  # x*x: pow(x, 2), twice as fast
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        x = x.reshape(1, batch * in_channel, height, width)
        k = self.kernel_size
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, *out.shape[2:])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channel, in_channel, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, *out.shape[2:])

    def _forward_unfused(self, x: Tensor, style: Tensor) -> Tensor:
        """Scale activations instead of weights: one shared-weight conv for the whole batch (faster at B > 1 on CPU).

        The demodulation norm is computed as ``s^2 @ sum_k(w^2)^T``, the same sum as the fused path's
        ``sum_{i,k} (w s)^2`` without materialising per-sample weights (float rounding differs, ~1e-7 relative).
        """
        batch, in_channel = x.shape[:2]
        weight = self.scale * self.weight.squeeze(0)
        dcoefs = None
        if self.demodulate:
            dcoefs = ((style * style) @ (weight * weight).sum((2, 3)).t() + self.eps).rsqrt()
        x = x * style.reshape(batch, in_channel, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if dcoefs is not None:
            out = out * dcoefs.view(batch, -1, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """Adds ``weight * noise`` (per-pixel noise shared over channels); no noise given = nothing added."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network."""

    def __init__(self, channel: int, size: int = 4, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size, generator=generator))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    """Bias, leaky ReLU (0.2), gain sqrt(2), optional clamp (NVIDIA's ``conv_clamp``; off in the port)."""

    def __init__(self, channel: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.clamp = clamp

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, clamp=self.clamp)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling), noise, bias + leaky ReLU: one synthesis layer."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        demodulate: bool = True,
        clamp: float | None = None,
        fused: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            demodulate=demodulate,
            upsample=upsample,
            blur_kernel=blur_kernel,
            fused=fused,
            generator=generator,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, clamp=clamp)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation, plus bias; adds the 2x FIR-upsampled previous RGB (skip)."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        clamp: float | None = None,
        fused: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False, fused=fused, generator=generator)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def _check_latent(x: Tensor, name: str, shape: tuple[int | None, ...]) -> None:
    ok = isinstance(x, Tensor) and x.ndim == len(shape)
    if not ok or any(s is not None and d != s for d, s in zip(x.shape, shape)):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = "[" + ", ".join("B" if s is None else str(s) for s in shape) + "]"
        raise ParameterError(f"{name} must have shape {want}, got {got}")


class Generator(nn.Module):
    """StyleGAN2 generator (config E/F, skip architecture) with Z, W, W+ and S entry points.

    Args:
        size: output resolution, a power of 2 (>= 4).
        style_dim: dimension of z and w (512 in every published config).
        n_mlp: mapping depth (8 in the paper; 2 in StyleGAN3's small configs).
        channel_multiplier: 2 for config F, 1 for the 256-px "config E" models; ignored for resolutions listed in
            ``channels``.
        blur_kernel: the FIR filter for upsampling.
        lr_mlp: learning-rate multiplier of the mapping layers (0.01); it also scales their weights at run time.
        channels: ``{resolution: channels}`` overriding the table (tiny test configs, NVIDIA's channel_base/max).
        conv_clamp: clamp every layer's activations to +-conv_clamp (NVIDIA's option; None = off, as in the port).
        fused_modconv: per-sample weights in one grouped conv (the port's default) vs scaling the activations;
            the two differ only by float rounding.
        seed: parameters and noise buffers are initialised from a private ``torch.Generator`` with this seed, so
            construction never touches (or depends on) the global RNG.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR,
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | None = None,
        conv_clamp: float | None = None,
        fused_modconv: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 4 or size & (size - 1):
            raise ParameterError(f"size must be a power of 2 >= 4, got {size!r}")
        if size > 2048 and channels is None:
            raise ParameterError(f"size {size} has no default channel table (max 2048); pass channels=")
        if style_dim < 1 or n_mlp < 0:
            raise ParameterError(f"style_dim must be >= 1 and n_mlp >= 0, got {style_dim}, {n_mlp}")
        if not lr_mlp > 0:
            raise ParameterError(f"lr_mlp must be > 0, got {lr_mlp}")
        gen = torch.Generator().manual_seed(seed)
        table = default_channels(min(size, 2048), channel_multiplier) if size <= 2048 else {}
        table.update({int(k): int(v) for k, v in (channels or {}).items() if int(k) <= size})
        missing = [r for r in resolutions(size) if r not in table]
        if missing:
            raise ParameterError(f"channels has no entry for resolutions {missing}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.blur_kernel = tuple(float(v) for v in blur_kernel)
        self.lr_mlp = float(lr_mlp)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.channels = {r: table[r] for r in resolutions(size)}
        ch = self.channels

        self.style = nn.Sequential(
            PixelNorm(),
            *(
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu", generator=gen)
                for _ in range(n_mlp)
            ),
        )
        layer_kwargs = dict(blur_kernel=blur_kernel, clamp=self.conv_clamp, fused=fused_modconv, generator=gen)
        self.input = ConstantInput(ch[4], generator=gen)
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, **layer_kwargs)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, **layer_kwargs)

        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # modulated 3x3 convs = noise inputs
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept so the module tree mirrors the port
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res, generator=gen))
        in_channel = ch[4]
        for i in range(3, self.log_size + 1):
            out_channel = ch[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, **layer_kwargs))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, **layer_kwargs))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, **layer_kwargs))
            in_channel = out_channel
        # The truncation centre. Not in the state dict (the port stores it next to g_ema, NVIDIA as mapping.w_avg):
        # loaders set it; for a fresh network call set_latent_avg(mean_latent()).
        self.register_buffer("latent_avg", torch.zeros(style_dim), persistent=False)

    # ----------------------------------------------------------------------------------------------- description
    @property
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-friendly apart from the int keys)."""
        return {
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channel_multiplier": self.channel_multiplier,
            "blur_kernel": list(self.blur_kernel),
            "lr_mlp": self.lr_mlp,
            "channels": dict(self.channels),
            "conv_clamp": self.conv_clamp,
        }

    def set_fused_modconv(self, fused: bool) -> Generator:
        """Switch every modulated conv between the fused (per-sample weights, port default) and unfused path.

        Unfused is several times faster for batches on CPU; the two differ only by float rounding (~1e-6).
        """
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = bool(fused)
        return self

    @property
    def device(self) -> torch.device:
        return self.input.input.device

    def _style_modules(self) -> list[tuple[str, ModulatedConv2d, int]]:
        """(name, modulated conv, index into W+) for every S layer, in synthesis order."""
        out: list[tuple[str, ModulatedConv2d, int]] = [("conv1", self.conv1.conv, 0), ("to_rgb1", self.to_rgb1.conv, 1)]
        for j, to_rgb in enumerate(self.to_rgbs):
            out.append((f"convs.{2 * j}", self.convs[2 * j].conv, 2 * j + 1))
            out.append((f"convs.{2 * j + 1}", self.convs[2 * j + 1].conv, 2 * j + 2))
            out.append((f"to_rgbs.{j}", to_rgb.conv, 2 * j + 3))
        return out

    @property
    def style_layers(self) -> list[tuple[str, int]]:
        """(module name, channels) of each S tensor, in the order ``styles()`` returns them."""
        return [(name, conv.in_channel) for name, conv, _ in self._style_modules()]

    @property
    def num_styles(self) -> int:
        return 3 * self.log_size - 4

    # ----------------------------------------------------------------------------------------------- latents
    def mapping(self, z: Tensor) -> Tensor:
        """Z ``[B, D]`` -> W ``[B, D]``."""
        _check_latent(z, "z", (None, self.style_dim))
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None, batch_size: int = 1024) -> Tensor:
        """Mean of W over ``n`` random z, shape ``[D]`` (the port's ``mean_latent`` returns ``[1, D]``).

        z is drawn from ``generator`` (default: a fresh one seeded 0, so the estimate is reproducible).
        """
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=self.device)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            z = torch.randn(m, self.style_dim, generator=generator, device=generator.device).to(self.device)
            total += self.style(z).double().sum(0)
            done += m
        return (total / n).float()

    def set_latent_avg(self, latent: Tensor) -> None:
        """Set the truncation centre (``[D]``; ``[1, D]`` is accepted)."""
        latent = torch.as_tensor(latent)
        if latent.numel() != self.style_dim:
            raise ParameterError(f"latent_avg must have {self.style_dim} values, got shape {tuple(latent.shape)}")
        self.latent_avg.copy_(latent.reshape(self.style_dim))

    def w_to_wplus(self, w: Tensor) -> Tensor:
        """W ``[B, D]`` -> W+ ``[B, n_latent, D]`` (the same w for every layer; a copy, safe to edit)."""
        _check_latent(w, "w", (None, self.style_dim))
        return w.unsqueeze(1).repeat(1, self.n_latent, 1)

    def truncate(self, w: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """Pull W or W+ toward ``latent_avg``: ``avg + psi * (w - avg)``.

        ``psi = 1`` returns ``w`` unchanged, ``psi = 0`` gives ``latent_avg``. ``cutoff`` truncates only the first
        ``cutoff`` layers of W+ (a W input is broadcast to W+ first), as NVIDIA's ``truncation_cutoff``.
        """
        if w.ndim == 2:
            _check_latent(w, "w", (None, self.style_dim))
        else:
            _check_latent(w, "wplus", (None, self.n_latent, self.style_dim))
        if psi == 1:
            return w
        avg = self.latent_avg.to(w.dtype)
        if cutoff is None:
            return avg + psi * (w - avg)
        if w.ndim == 2:
            w = self.w_to_wplus(w)
        cutoff = max(0, min(int(cutoff), self.n_latent))
        head = avg + psi * (w[:, :cutoff] - avg)
        return torch.cat([head, w[:, cutoff:]], dim=1)

    def styles(self, latent: Tensor) -> list[Tensor]:
        """W ``[B, D]`` or W+ ``[B, n_latent, D]`` -> S: one ``[B, C_in]`` tensor per modulated layer (module doc)."""
        if latent.ndim == 2:
            latent = self.w_to_wplus(latent)
        _check_latent(latent, "wplus", (None, self.n_latent, self.style_dim))
        return [conv.modulation(latent[:, idx]) for _, conv, idx in self._style_modules()]

    # ----------------------------------------------------------------------------------------------- noise
    def noise_shapes(self, batch: int = 1) -> list[tuple[int, int, int, int]]:
        return [(batch, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_layers)]

    def make_noise(
        self, batch: int, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> list[Tensor | None]:
        """Per-layer noise inputs: 'const' = the stored ``noises.noise_i`` (deterministic), 'random' = fresh N(0, 1)
        from ``generator`` (a new non-deterministically seeded one if None; never the global RNG), 'none' = no noise.
        """
        if noise_mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if noise_mode == "none":
            return [None] * self.num_layers
        if noise_mode == "random":
            if generator is None:
                generator = torch.Generator()
                generator.seed()
            return [
                torch.randn(shape, generator=generator, device=generator.device).to(self.device)
                for shape in self.noise_shapes(batch)
            ]
        raise ParameterError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")

    # ----------------------------------------------------------------------------------------------- synthesis
    def synthesis(
        self,
        wplus: Tensor | None = None,
        *,
        styles: Sequence[Tensor] | None = None,
        noise_mode: str = "const",
        noise: Sequence[Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Image ``[B, 3, size, size]`` from W+ (or W, broadcast) or from S (``styles=``); exactly one of them.

        ``noise`` (a list of ``num_layers`` tensors ``[B or 1, 1, r, r]`` or None) overrides ``noise_mode``.
        """
        if (wplus is None) == (styles is None):
            raise ParameterError("synthesis needs exactly one of wplus= or styles=")
        if styles is None:
            styles = self.styles(wplus)
        styles = list(styles)
        layers = self._style_modules()
        if len(styles) != len(layers):
            raise ParameterError(f"styles must be a list of {len(layers)} tensors, got {len(styles)}")
        batch = styles[0].shape[0] if isinstance(styles[0], Tensor) else 0
        for s, (name, conv, _) in zip(styles, layers):
            _check_latent(s, f"style for {name}", (batch, conv.in_channel))
        if noise is None:
            noise = self.make_noise(batch, noise_mode, generator)
        elif len(noise) != self.num_layers:
            raise ParameterError(f"noise must be a list of {self.num_layers} tensors (or None), got {len(noise)}")

        out = self.input(batch)
        out = self.conv1(out, styles[0], noise=noise[0])
        skip = self.to_rgb1(out, styles[1])
        k = 2
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, styles[k], noise=noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, styles[k + 1], noise=noise[2 * j + 2])
            skip = to_rgb(out, styles[k + 2], skip)
            k += 3
        return skip

    def forward(
        self,
        z: Tensor | None = None,
        *,
        w: Tensor | None = None,
        wplus: Tensor | None = None,
        styles: Sequence[Tensor] | None = None,
        truncation: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        noise: Sequence[Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Image ``[B, 3, size, size]`` (about [-1, 1]) from exactly one of z, w, wplus or styles.

        Truncation (``truncation`` = psi, toward ``latent_avg``) applies in W/W+; it is refused for S input.
        """
        given = [name for name, v in (("z", z), ("w", w), ("wplus", wplus), ("styles", styles)) if v is not None]
        if len(given) != 1:
            raise ParameterError(f"pass exactly one of z, w, wplus, styles (got {', '.join(given) or 'none'})")
        if styles is not None:
            if truncation != 1:
                raise ParameterError("truncation applies to W/W+ latents; it cannot be applied to styles (S)")
            return self.synthesis(styles=styles, noise_mode=noise_mode, noise=noise, generator=generator)
        if z is not None:
            w = self.mapping(z)
        latent = w if w is not None else wplus
        latent = self.truncate(latent, truncation, truncation_cutoff)
        if latent.ndim == 2:
            latent = self.w_to_wplus(latent)
        return self.synthesis(latent, noise_mode=noise_mode, noise=noise, generator=generator)
