"""StyleCLIP latent optimisation (Patashnik et al., ICCV 2021, section 4): edit a picture by optimising its W+
latent toward a text prompt.

Loss = D_CLIP(G(w), t) + λ_L2 ‖w − w_s‖² + λ_ID L_ID(G(w), G(w_s)), where D_CLIP is ``1 − cos`` between the CLIP
embeddings of the whole image (resized to the CLIP's input, as the paper's ×7 upsample + pool to 224) and of the
prompt (``CosinePromptTerm``; ``cutouts`` > 0 swaps in the guide's cutout views, which the paper does not use).
The paper's defaults are kept: λ_L2 = 0.008, Adam at lr 0.1 under its schedule (linear warm-up over the first 5 %,
cosine ramp-down over the last 25 %: the projector's, ``invert.learning_rate``), 300 steps, the start drawn at
truncation 0.7, λ_ID = 0 (the reference code's default for editing). The identity term is the papers' face
network when a module is passed (``identity_net=``, Python API), else the CLIP's early features stand in
(``editing.Identity``). The start is a sampled seed or a "latent/wplus" artifact (``stylegan`` / ``invert``);
``steps = 0`` redraws the start. 300 steps of a 64 px generator take 23 s on one CPU thread (measured,
``bench/stylegan_edits.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.augment import Cutouts
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.guide import Guide, LatentL2Term
from clipkit.guidance.prompts import TEMPLATE_SETS, parse_prompts
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, resolve_settings, run_steps
from clipkit.methods.stylegan.editing import (
    LATENT_KIND,
    CosinePromptTerm,
    Identity,
    IdentityTerm,
    check_range,
    fast_copy,
    render,
    start_latents,
)
from clipkit.methods.stylegan.invert import learning_rate
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit


@dataclass
class StyleClipOptimiseSettings:
    """Every knob of a StyleCLIP latent optimisation; a preset for 'styleclip_optimise' holds exactly these."""

    prompt: str = "a photo on a striped background"
    generator: str = DEFAULT_GENERATOR
    seed: int = 0  # the start: image i is seed + i (ignored when a latent artifact is given)
    count: int = 1
    truncation: float = 0.7  # the paper's, for the start
    steps: int = 300  # the paper's; 0 redraws the start
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    l2_lambda: float = 0.008
    id_lambda: float = 0.0  # the reference code's default for editing (faces: raise it with an identity network)
    cutouts: int = 0  # 0: the whole image, as the paper; n > 0: the guide's n cutout views instead
    templates: str = "plain"  # the paper encodes the prompt as written
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> StyleClipOptimiseSettings:
        parse_prompts(self.prompt)
        if not isinstance(self.steps, int) or not 0 <= self.steps <= 100_000:
            raise ParameterError(f"steps={self.steps!r} must be an integer in 0..100000")
        if not 1 <= self.count <= 64:
            raise ParameterError(f"count={self.count} must be in 1..64")
        check_range(self, "truncation", -1, 2)
        check_range(self, "lr", 0, 10, low_open=True)
        check_range(self, "lr_rampup", 0, 1, low_open=True)
        check_range(self, "lr_rampdown", 0, 1, low_open=True)
        check_range(self, "l2_lambda", 0, 1e6)
        check_range(self, "id_lambda", 0, 1e6)
        if not 0 <= self.cutouts <= 256:
            raise ParameterError(f"cutouts={self.cutouts} must be in 0..256 (0: the whole image)")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        if not self.generator:
            raise ParameterError("generator must name a StyleGAN2 (e.g. 'world-stylegan2') or a file")
        return self


def styleclip_optimise(
    settings: StyleClipOptimiseSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    latent: Artifact | None = None,
    identity_net: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **overrides,
) -> RunResult:
    """Optimise the start's W+ toward the prompt; returns the edited images and their "latent/wplus" artifact."""
    s = resolve_settings(StyleClipOptimiseSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    clip = clip or get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    start = start_latents(g, latent, s.seed, s.count, s.truncation)
    original = render(g, start)
    rng = torch.Generator().manual_seed(s.seed)
    view = Cutouts(s.cutouts) if s.cutouts > 0 else None
    terms = [CosinePromptTerm(prompts=s.prompt, templates=TEMPLATE_SETS[s.templates], view=view),
             LatentL2Term(weight=s.l2_lambda)]
    identity = Identity(clip, identity_net) if s.id_lambda > 0 else None
    if identity is not None:
        terms.append(IdentityTerm(weight=s.id_lambda, identity=identity))
    guide = Guide(clip, terms, generator=rng)
    reference = identity.reference(original) if identity is not None else None
    latent_ref = start.wplus.detach()
    w = latent_ref.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=s.lr)
    noise = start.noise(g)
    fast = fast_copy(g)

    def step(i: int) -> dict[str, float]:
        for group in opt.param_groups:
            group["lr"] = learning_rate(i / s.steps, s.lr, s.lr_rampup, s.lr_rampdown)
        images = to_unit(fast.synthesis(w, noise=noise))
        out = guide(images, latent=w, latent_ref=latent_ref, identity_ref=reference)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out.values

    def preview() -> torch.Tensor:
        return render(g, start, w.detach())

    history, cancelled, seconds = [], False, 0.0
    if s.steps > 0:
        history, cancelled, seconds = run_steps(s.steps, step, callback, cancel, preview, progress=progress,
                                                desc="styleclip")
    edited = w.detach()
    final = render(g, start, edited)
    record = {"method": "styleclip_optimise", **asdict(s), "clip": clip.name,
              "identity": identity.name if identity is not None else None, **start.meta}
    art = Artifact(LATENT_KIND, start.artifact_tensors(edited),
                   {"generator": s.generator, **start.artifact_meta(), "prompt": s.prompt,
                    "method": "styleclip_optimise"})
    return RunResult.from_loop(final.cpu(), record, history, seconds, cancelled, t_load,
                               artifacts={"latent": art})
