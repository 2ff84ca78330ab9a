"""CLIP-guided editing of a given image, optionally inside a mask.

The image is re-parameterised as a multi-scale residual on top of the input (PyramidImage with a base) and
optimised with any of: a global prompt loss (weighted / negative prompts), a directional loss from a source
text to a target text (StyleGAN-NADA's direction, with the input as the paired source seen through the same
cutouts), a content (MSE) loss to the input and total variation. With a mask the encoder sees only the
region (guidance.regions.focus) and the result keeps every pixel outside it exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.guidance.augment import Cutouts
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.guide import DirectionalTerm, Guide, PromptTerm, Term, TVTerm
from clipkit.guidance.images import as_tensor, encode_mask, mask_input
from clipkit.guidance.prompts import TEMPLATE_SETS, parse_prompts
from clipkit.guidance.regions import composite, feather, prepare_mask
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, check_steps, resolve_settings, run_steps, timed
from clipkit.methods.image.pyramid import PyramidImage


@dataclass
class EditSettings:
    """Every knob of an edit run; a preset for method 'edit' holds exactly these keys."""

    prompt: str = ""
    source_text: str = ""
    target_text: str = ""
    prompt_weight: float = 1.0
    direction_weight: float = 1.0
    content_weight: float = 1.0
    tv_weight: float = 0.1
    detail_decay: float = 0.5  # step size of each finer pyramid level relative to the next coarser one
    steps: int = 100
    seed: int = 0
    lr: float = 0.1
    cutouts: int = 16
    cut_pow: float = 1.0
    min_frac: float = 0.5
    noise: float = 0.2  # strong pixel noise on the views: the edit must hold up under it, not exploit one CLIP
    feather: float = 0.0  # px: the mask's soft inner edge (guidance.regions.feather); 0 = its edge as painted
    templates: str = "plain"
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> EditSettings:
        if not self.prompt.strip() and not self.target_text.strip():
            raise ParameterError("an edit needs a prompt or a target_text (with source_text) to move toward")
        if self.prompt.strip():
            parse_prompts(self.prompt)
        if self.target_text.strip() and not self.source_text.strip():
            raise ParameterError("target_text needs a source_text describing the input (e.g. 'a photo')")
        check_steps(self.steps)
        for name in ("prompt_weight", "direction_weight", "content_weight", "tv_weight"):
            v = getattr(self, name)
            if not 0 <= v <= 1e5:
                raise ParameterError(f"{name}={v} must be in [0, 100000]")
        if not 0 < self.detail_decay <= 1:
            raise ParameterError(f"detail_decay={self.detail_decay} must be in (0, 1]")
        if not 0 < self.lr <= 10:
            raise ParameterError(f"lr={self.lr} must be in (0, 10]")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        Cutouts(self.cutouts, cut_pow=self.cut_pow, min_frac=self.min_frac)
        if not 0 <= self.feather <= 256:
            raise ParameterError(f"feather={self.feather} must be in [0, 256] pixels")
        return self


def edit(
    image: Image.Image | torch.Tensor,
    mask: torch.Tensor | Image.Image | None = None,
    settings: EditSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    **overrides,
) -> RunResult:
    """Edit `image` toward the prompt / direction; pixels where `mask` is 0 come back unchanged."""
    s = resolve_settings(EditSettings, settings, overrides)
    clip, t_load = timed(lambda: clip or get_clip(s.model, s.pretrained))
    source = as_tensor(image, clip.device)
    painted = prepare_mask(mask_input(mask), source) if mask is not None else None  # recorded as painted
    m = feather(painted, s.feather) if painted is not None else None
    gen = torch.Generator().manual_seed(s.seed)
    param = PyramidImage(source.shape[-2:], base=source, decay=s.detail_decay).to(clip.device)
    view = Cutouts(s.cutouts, cut_pow=s.cut_pow, min_frac=s.min_frac, noise=s.noise)
    templates = TEMPLATE_SETS[s.templates]
    terms: list[Term] = []
    if s.prompt.strip():
        terms.append(PromptTerm(weight=s.prompt_weight, prompts=s.prompt, templates=templates, view=view))
    if s.target_text.strip():
        terms.append(DirectionalTerm(weight=s.direction_weight, source_text=s.source_text,
                                     target_text=s.target_text, templates=templates, view=view))
    if s.tv_weight > 0:
        terms.append(TVTerm(weight=s.tv_weight))
    guide = Guide(clip, terms, mask=m, generator=gen)
    opt = torch.optim.Adam(param.parameters(), lr=s.lr)
    paired = any(t.uses_clip and t.paired for t in terms)

    def current() -> torch.Tensor:
        return composite(param(), source, m)

    def step(_: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        img = current()
        out = guide(img, source_images=source if paired else None)
        content = F.mse_loss(img, source)
        loss = out.loss + s.content_weight * content
        loss.backward()
        opt.step()
        return {**out.values, "content": float(content.detach()), "loss": float(loss.detach())}

    def preview() -> torch.Tensor:
        with torch.no_grad():
            return current().detach()

    history, cancelled, seconds = run_steps(s.steps, step, callback, cancel, preview, progress=progress, desc="edit")
    with torch.no_grad():
        final = current().detach()
    record = {"method": "edit", **asdict(s), "clip": clip.name, "masked": m is not None,
              "mask": encode_mask(painted) if painted is not None else None}
    return RunResult.from_loop(final, record, history, seconds, cancelled, t_load)
