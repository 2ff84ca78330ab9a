"""CLIP-guided image to image with a latent diffusion model: SDEdit, with Blended Latent Diffusion inside a mask.

SDEdit (Meng et al., ICLR 2022): the picture's latent is noised to an intermediate level, ``strength`` of the
way to pure noise (the forward process q(x_t | x_0) at t = strength * T), and denoised from there; the denoiser's
prior keeps what the noise did not erase (layout and colours at low strength) and redraws the rest toward the
prompt. As in diffusers' image-to-image pipelines, ``strength`` picks the first of the ``steps`` DDIM steps to run
(``int(steps * strength)`` steps are run). The paper's t0 in [0.3, 0.6] is for turning strokes into realistic
images; for a prompt edit the default is diffusers' image-to-image default, 0.8, at which the world model's
edits change colour and shape in pixels, not only in the judge's reading (``docs/measured.md``).

Every step is the CLIP-guided DDIM step of ``clip_guided_diffusion`` (classifier-free guidance for a
text-conditioned model, CLIP guidance with self-recurrence).

With a mask (1 = may change), Blended Latent Diffusion (Avrahami et al., SIGGRAPH 2023): after every step the
latent outside the mask, downsampled to the latent grid, is replaced by the input's latent noised to that step's
level, so the background keeps following the input while the region is redrawn in context; the guide sees the
region only (``guidance.regions.focus``, as in the pixel edit). The decoded result is blended into the input in
pixels with the painted (optionally feathered) mask, so every pixel outside it is the input's, exactly; the
paper's decoder fine-tuning for a seamless background is replaced by that composite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.images import as_tensor, encode_mask, mask_input
from clipkit.guidance.regions import composite, feather, prepare_mask
from clipkit.guidance.runs import (
    CancelToken,
    RunResult,
    StepCallback,
    image_generators,
    randn_per_image,
    resolve_settings,
    timed,
)
from clipkit.methods.diffusion.clip_guided_diffusion import SamplingSettings, guided_ddim, load_models
from clipkit.methods.diffusion.latent_model import LatentModel


@dataclass
class Img2ImgSettings(SamplingSettings):
    """Every knob of an img2img run; a preset for method 'img2img' holds exactly these keys."""

    prompt: str = ""  # what the picture should become (required)
    strength: float = 0.8  # how far toward pure noise the picture goes before denoising (SDEdit's t0 / T)
    feather: float = 0.0  # px: the mask's soft inner edge (guidance.regions.feather); 0 = its edge as painted

    def validate(self) -> Img2ImgSettings:
        if not self.prompt.strip():
            raise ParameterError("img2img needs a prompt: what the picture should become")
        self.check_sampling()
        if not 0 < self.strength <= 1:
            raise ParameterError(f"strength={self.strength} must be in (0, 1] (the share of the noise schedule "
                                 "the picture is taken back through)")
        if not 0 <= self.feather <= 256:
            raise ParameterError(f"feather={self.feather} must be in [0, 256] pixels")
        return self

    def first_step(self) -> int:
        """Index of the first DDIM step run: ``int(steps * strength)`` steps remain, at least one."""
        return self.steps - max(1, min(self.steps, int(self.steps * self.strength)))


def img2img(
    image: Image.Image | torch.Tensor,
    mask: torch.Tensor | Image.Image | None = None,
    settings: Img2ImgSettings | None = None,
    clip: ClipModel | None = None,
    latent_model: LatentModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    **overrides,
) -> RunResult:
    """Redraw `image` toward the prompt; where `mask` is 0 the pixels come back unchanged. ``batch`` takes of
    the same picture, take i from seed + i."""
    s = resolve_settings(Img2ImgSettings, settings, overrides)
    (ldm, guide_clip), t_load = timed(lambda: load_models(s, clip, latent_model))
    source = as_tensor(image, name="image").float()
    if source.shape[0] != 1:
        raise ParameterError(f"img2img takes one picture at a time, got {source.shape[0]} (batch makes "
                             "several takes of one)")
    painted = prepare_mask(mask_input(mask), source) if mask is not None else None  # recorded as painted
    m = feather(painted, s.feather) if painted is not None else None
    seeds, gens = image_generators(s.seed, s.batch)
    sched = ldm.ddim()
    sched.set_timesteps(s.steps)
    start = s.first_step()
    with torch.no_grad():
        z = ldm.encode(source).expand(s.batch, -1, -1, -1)
    abar0 = sched.alphas_cumprod[sched.timesteps[start]].to(ldm.device)

    def noised(a: torch.Tensor) -> torch.Tensor:
        """The input's latent at noise level abar = a (q(x_t | x_0)), each take's noise from its own generator."""
        return a.sqrt() * z + (1 - a).sqrt() * randn_per_image(gens, z.shape[1:]).to(ldm.device)

    keep = None
    if m is not None:
        # the latent region covers every latent cell the painted region touches (max-pooled): the pixel composite
        # below restores the input exactly outside the painted pixels
        m_lat = F.adaptive_max_pool2d(m.to(ldm.device), z.shape[-2:])

        def keep(latents: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return m_lat * latents + (1 - m_lat) * noised(a)

    run = guided_ddim(s, ldm, guide_clip, clip, gens, sched, start, noised(abar0), tuple(source.shape[-2:]),
                      callback, cancel, progress, "img2img", region=m, keep=keep)
    final = composite(run.images, source.cpu(), m.cpu() if m is not None else None)
    record = {"method": "img2img", **asdict(s), "seeds": seeds, **run.models, "steps_run": s.steps - start,
              "masked": m is not None, "mask": encode_mask(painted) if painted is not None else None}
    return RunResult.from_loop(final, record, run.history, run.seconds, run.cancelled, t_load)
