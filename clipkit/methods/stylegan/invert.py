"""Inversion: a picture -> the StyleGAN2 latent (W+, and its noise maps) that redraws it, for editing real images.

The projector of Karras et al. (StyleGAN2, CVPR 2020, appendix D): start at the average latent, optimise with Adam
under a learning rate that ramps up over the first 5 % and down (cosine) over the last 25 %, add latent noise
(5 % of W's spread, fading out by 75 %) so the search does not stall, and regularise the per-layer noise maps (their
autocorrelation at every scale, weight 1e5) so they do not paint the picture themselves; after each step the maps
are renormalised. The paper's perceptual term is LPIPS (VGG), whose weights do not exist here: pixel MSE plus the
guide CLIP's early image features (``ClipEarlyFeatures``) take its place, and the paper's 1000 steps are scaled to
300 for 64 px generators on CPU. The latent, the noise maps and the reconstruction's PSNR come back.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.features import ClipEarlyFeatures, content_loss
from clipkit.guidance.images import as_tensor
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, check_steps, resolve_settings, run_steps
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import Generator

SPACES = ("wplus", "w")


@dataclass
class InvertSettings:
    """Every knob of an inversion; a preset for method 'invert' holds exactly these keys."""

    generator: str = DEFAULT_GENERATOR
    steps: int = 300  # the paper: 1000 (scaled down for 64 px generators on CPU)
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    latent_noise: float = 0.05  # times W's spread, fading to 0 at latent_noise_ramp of the run
    latent_noise_ramp: float = 0.75
    noise_regularize: float = 1e5
    pixel_weight: float = 1.0  # MSE on [0, 1] images
    perceptual_weight: float = 0.1  # CLIP early features (relative); LPIPS in the paper
    space: str = "wplus"  # "w": one latent for every layer (edits stay closer to the generator's range)
    optimise_noise: bool = True
    seed: int = 0
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> InvertSettings:
        check_steps(self.steps)
        if self.space not in SPACES:
            raise ParameterError(f"space={self.space!r} must be one of {', '.join(SPACES)}")
        if not 0 < self.lr <= 10:
            raise ParameterError(f"lr={self.lr} must be in (0, 10]")
        for name in ("lr_rampup", "lr_rampdown", "latent_noise_ramp"):
            if not 0 < getattr(self, name) <= 1:
                raise ParameterError(f"{name}={getattr(self, name)} must be in (0, 1]")
        for name in ("latent_noise", "noise_regularize", "pixel_weight", "perceptual_weight"):
            if not 0 <= getattr(self, name) <= 1e7:
                raise ParameterError(f"{name}={getattr(self, name)} must be in [0, 1e7]")
        if self.pixel_weight == 0 and self.perceptual_weight == 0:
            raise ParameterError("pixel_weight and perceptual_weight cannot both be 0: nothing would be matched")
        return self


def learning_rate(t: float, base: float, rampup: float, rampdown: float) -> float:
    """The projector's schedule at progress ``t`` in [0, 1]: linear warm-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / rampup)


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map with itself shifted by one pixel, summed over a pyramid of
    2x2-averaged copies down to 8 px: zero for white noise, large where a map carries image structure."""
    loss = noises[0].new_zeros(())
    for n in noises:
        size = n.shape[-1]
        while True:
            loss = loss + (n * torch.roll(n, 1, dims=3)).mean() ** 2 + (n * torch.roll(n, 1, dims=2)).mean() ** 2
            if size <= 8:
                break
            n = F.avg_pool2d(n, 2)
            size //= 2
    return loss


@torch.no_grad()
def normalise_noise(noises: list[torch.Tensor]) -> None:
    for n in noises:
        n.sub_(n.mean()).div_(n.std().clamp_min(1e-8))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of images in [0, 1], in dB."""
    mse = F.mse_loss(a.float(), b.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


@torch.no_grad()
def latent_spread(g: Generator, n: int = 4096, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(mean W, RMS distance of W from it) over ``n`` seeded samples: where to start and how far to jitter."""
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seed)).to(g.device)
    w = g.mapping(z)
    mean = w.mean(0)
    return mean, float(((w - mean) ** 2).sum(1).mean().sqrt())


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop to a square and resize (antialiased) to the generator's resolution."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[..., top:top + side, left:left + side]
    if side == size:
        return crop
    return F.interpolate(crop, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def invert(
    image: Image.Image | torch.Tensor,
    settings: InvertSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    generator: Generator | None = None,
    **overrides,
) -> RunResult:
    """Find the latent that redraws ``image``; returns the reconstruction and a "latent/wplus" artifact (with the
    noise maps, so the picture is redrawn exactly) that the editing methods start from."""
    s = resolve_settings(InvertSettings, settings, overrides)
    t0 = time.perf_counter()
    g = generator if generator is not None else get_generator(s.generator)
    clip = clip if clip is not None or s.perceptual_weight == 0 else get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    target = fit_square(as_tensor(image, g.device)[:1], g.size)
    features = ClipEarlyFeatures(clip) if s.perceptual_weight > 0 else None
    with torch.no_grad():
        reference = [f.detach() for f in features(target)] if features else []
    mean, spread = latent_spread(g, seed=s.seed)
    start = mean[None, None].repeat(1, g.n_latent, 1) if s.space == "wplus" else mean[None].clone()
    latent = start.clone().requires_grad_(True)
    rng = torch.Generator().manual_seed(s.seed)
    noises = [n.requires_grad_(s.optimise_noise) for n in g.make_noise(1, "random", rng)]
    params = [latent] + (noises if s.optimise_noise else [])
    opt = torch.optim.Adam(params, lr=s.lr, betas=(0.9, 0.999))

    def step(i: int) -> dict[str, float]:
        t = i / s.steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, s.lr, s.lr_rampup, s.lr_rampdown)
        jitter = spread * s.latent_noise * max(0.0, 1 - t / s.latent_noise_ramp) ** 2
        shaken = latent + torch.randn(latent.shape, generator=rng).to(latent) * jitter
        wplus = shaken if s.space == "wplus" else g.w_to_wplus(shaken)
        out = to_unit(g.synthesis(wplus, noise=noises))
        pixel = F.mse_loss(out, target)
        perceptual = content_loss(features(out), reference) if features else pixel.new_zeros(())
        reg = noise_regularization(noises) if s.optimise_noise else pixel.new_zeros(())
        loss = s.pixel_weight * pixel + s.perceptual_weight * perceptual + s.noise_regularize * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s.optimise_noise:
            normalise_noise(noises)
        return {k: float(v.detach()) for k, v in
                (("pixel", pixel), ("perceptual", perceptual), ("noise_reg", reg), ("loss", loss))}

    def render() -> torch.Tensor:
        with torch.no_grad():
            wplus = latent if s.space == "wplus" else g.w_to_wplus(latent)
            return to_unit(g.synthesis(wplus.detach(), noise=[n.detach() for n in noises]))

    history, cancelled, seconds = run_steps(s.steps, step, callback, cancel, render, progress=progress,
                                            desc="invert")
    final = render()
    wplus = (latent if s.space == "wplus" else g.w_to_wplus(latent)).detach()
    quality = psnr(final, target)
    record = {"method": "invert", **asdict(s), "psnr": round(quality, 3),
              "clip": clip.name if clip is not None else None}
    tensors = {"wplus": wplus.cpu().clone(), "target": target.cpu()}
    tensors.update({f"noise_{i}": n.detach().cpu().clone() for i, n in enumerate(noises)})
    latents = Artifact("latent/wplus", tensors, {"generator": s.generator, "psnr": quality, "space": s.space,
                                                 "noise_mode": "given"})
    return RunResult.from_loop(final.cpu(), record, history, seconds, cancelled, t_load,
                               extras={"psnr": quality}, artifacts={"latent": latents})


def redraw(g: Generator, latent: Artifact) -> torch.Tensor:
    """The image a "latent/wplus" artifact stands for ([0, 1]), with its own noise maps when it carries them."""
    wplus = latent.tensors["wplus"].to(g.device)
    maps = [latent.tensors.get(f"noise_{i}") for i in range(g.num_layers)]
    noise = [m.to(g.device) for m in maps] if all(m is not None for m in maps) else None
    mode = "const" if noise is not None else latent.meta.get("noise_mode", "const")
    with torch.no_grad():  # image by image, as sampled (the same summation order)
        return torch.cat([to_unit(g.synthesis(wplus[i:i + 1], noise=noise, noise_mode=mode))
                          for i in range(wplus.shape[0])])
