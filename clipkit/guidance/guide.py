"""Guide: a weighted sum of named loss terms with one batched CLIP image pass per step.

Each CLIP term names the view it wants (whole image, cutouts, patches). The guide builds every distinct
view once, resizes them to the encoder's input, concatenates them (and the paired source images, when a
directional term needs them) and encodes the lot in a single forward pass; each term then reads its rows.
The result carries the scalar loss for backward and plain floats per term for progress display.

Two things keep a guided step near the cost of the CLIP's own forward and backward on a CPU (measured in
``bench/guided_step.py``): a convolutional image tower reads its views channels-last (the world guide's
forward+backward: 1.4x faster), and ``GuideOutput.grad`` backpropagates the loss scaled by a power of two, which
keeps the backward out of subnormal floats (the world guide's attention pool made them: its backward ran 1.3x
slower) and gives the same gradient, unscaled exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from clipkit.guidance import losses
from clipkit.guidance.augment import Cutouts, PatchCrops
from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.images import check_images
from clipkit.guidance.prompts import PLAIN_TEMPLATES, encode_prompt, encode_prompts, parse_prompts
from clipkit.guidance.regions import focus, mask_box, prepare_mask

View = Cutouts | PatchCrops | None


@dataclass(eq=False)
class Term:
    """A named, weighted loss. `view` None means the whole image; `paired` terms also see source images."""

    weight: float = 1.0
    view: View = None
    name: str = ""
    uses_clip = True
    paired = False

    def setup(self, clip: ClipModel) -> None:
        """Encode what the term needs from text once (the text cache makes repeats free)."""

    def __call__(self, emb, src_emb, images: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError


@dataclass(eq=False)
class PromptTerm(Term):
    """Global loss toward weighted prompts ('a red circle:1 | blurry:-0.5'), averaged over views."""

    prompts: Any = ""
    templates: Sequence[str] = PLAIN_TEMPLATES
    name: str = "prompt"

    def setup(self, clip: ClipModel) -> None:
        self.text_emb, self.text_w = encode_prompts(clip, parse_prompts(self.prompts), self.templates)

    def __call__(self, emb, src_emb, images, ctx):
        return losses.global_loss(emb, self.text_emb, self.text_w)


@dataclass(eq=False)
class DirectionalTerm(Term):
    """StyleGAN-NADA / CLIPstyler direction: the image must move from its source as the text moves.

    The source is a fixed image (`source_image`, e.g. CLIPstyler's content photo, encoded once, whole)
    or the `source_images` passed each step (e.g. NADA's frozen generator), seen through the same views.
    """

    source_text: str = "a photo"
    target_text: str = ""
    templates: Sequence[str] = PLAIN_TEMPLATES
    source_image: torch.Tensor | None = None
    name: str = "directional"

    @property
    def paired(self) -> bool:  # type: ignore[override]
        return self.source_image is None

    def setup(self, clip: ClipModel) -> None:
        self.src_text = encode_prompt(clip, self.source_text, self.templates)
        self.tgt_text = encode_prompt(clip, self.target_text, self.templates)
        self.src_fixed = None
        if self.source_image is not None:
            with torch.inference_mode():
                self.src_fixed = clip.encode_image(check_images(self.source_image)).mean(0).clone()

    def source(self, src_emb: torch.Tensor | None, ctx) -> torch.Tensor:
        if self.src_fixed is not None:
            return self.src_fixed
        if src_emb is None:
            raise ParameterError(f"term '{self.name}' needs source_images=... (or a fixed source_image)")
        return src_emb

    def __call__(self, emb, src_emb, images, ctx):
        return losses.directional_loss(self.source(src_emb, ctx), emb, self.src_text, self.tgt_text)


@dataclass(eq=False)
class PatchDirectionalTerm(DirectionalTerm):
    """CLIPstyler's patch-wise directional loss with threshold rejection of already-stylised patches."""

    threshold: float = 0.7
    view: View = field(default_factory=PatchCrops)
    name: str = "patch"

    def __call__(self, emb, src_emb, images, ctx):
        loss, kept = losses.patch_directional_loss(
            self.source(src_emb, ctx), emb, self.src_text, self.tgt_text, self.threshold
        )
        ctx.setdefault("stats", {})[f"{self.name}_kept"] = float(kept.float().mean())
        return loss


@dataclass(eq=False)
class ResidualVectorTerm(Term):
    """RAVE: push image embeddings along a residual vector r (e.g. mean well-lit - mean backlit)."""

    vector: torch.Tensor | None = None
    threshold: float = 1.0
    name: str = "residual"

    def __call__(self, emb, src_emb, images, ctx):
        return losses.residual_vector_loss(emb, self.vector.to(emb), self.threshold)


@dataclass(eq=False)
class PromptPairTerm(Term):
    """CLIP-LIT: make images score as the positive prompt of a (positive, negative) pair."""

    positive: torch.Tensor | None = None
    negative: torch.Tensor | None = None
    logit_scale: float = 100.0
    name: str = "prompt_pair"

    def __call__(self, emb, src_emb, images, ctx):
        return losses.prompt_pair_loss(emb, self.positive.to(emb), self.negative.to(emb), 0, self.logit_scale)


@dataclass(eq=False)
class TVTerm(Term):
    """Total variation on the pixels (inside the mask, when there is one)."""

    name: str = "tv"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        return losses.tv_loss(images, ctx.get("mask"))


@dataclass(eq=False)
class LatentL2Term(Term):
    """Keeps a latent near its start: pass latent=... and latent_ref=... to the guide call."""

    name: str = "latent_l2"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        if "latent" not in ctx or "latent_ref" not in ctx:
            raise ParameterError("term 'latent_l2' needs latent=... and latent_ref=... in the guide call")
        return losses.latent_l2(ctx["latent"], ctx["latent_ref"])


# 2**40: a power of two, so scaling and unscaling are exact; large enough that the world guide's backward has no
# subnormal floats left (2**16 and 2**24 were little faster than 1), and far from fp32's range (3e38): a gradient
# would need to pass 3e26 on the way to overflow.
GRAD_SCALE = 2.0**40


def _channels_last_pays(clip: ClipModel) -> bool:
    """Channels-last input for convolutional image towers (ResNets: more than the one patch convolution of a ViT)
    on a CPU, where it measured 1.4x faster for the world guide; elsewhere unmeasured, so left as it is."""
    if clip.device.type != "cpu":
        return False
    visual = getattr(clip.model, "visual", None)
    return visual is not None and sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 1


@dataclass
class GuideOutput:
    loss: torch.Tensor
    values: dict[str, float]

    def grad(self, inputs: torch.Tensor | Sequence[torch.Tensor], scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        """d(`scale` * loss)/d`inputs`, backpropagated at ``GRAD_SCALE`` times the size (out of the subnormal
        floats that slow a CPU's backward many times over) and unscaled exactly."""
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        grads = torch.autograd.grad(self.loss * (scale * GRAD_SCALE), inputs)
        return tuple(g / GRAD_SCALE for g in grads)

    def backward(self, params: Sequence[torch.Tensor], scale: float = 1.0) -> None:
        """``grad`` accumulated into each parameter's ``.grad``, like ``loss.backward()`` for an optimiser."""
        params = list(params)
        for p, g in zip(params, self.grad(params, scale)):
            p.grad = g if p.grad is None else p.grad + g


class Guide:
    """Combine terms; call it on images (B, 3, H, W) in [0, 1] each step, backward the returned loss."""

    def __init__(
        self,
        clip: ClipModel,
        terms: Sequence[Term],
        mask: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> None:
        if not terms:
            raise ParameterError("a Guide needs at least one term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ParameterError(f"term names must be unique, got {names}")
        for t in terms:
            if not (abs(t.weight) < 1e7):
                raise ParameterError(f"weight {t.weight} of term '{t.name}' is out of range")
            t.setup(clip)
        self.clip, self.terms, self.mask = clip, list(terms), mask
        self.channels_last = _channels_last_pays(clip)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        if not isinstance(self.generator, torch.Generator) and not len(self.generator):
            raise ParameterError("generator: give one torch.Generator or one per image")

    def draw(self, view: View, x: torch.Tensor, size: int, region) -> torch.Tensor:
        """The view's draws from the guide's generator, or with one generator per image (a batch whose image i
        is re-runnable alone: its views come from its own generator, image-major as one generator gives them)."""
        gens = self.generator
        if isinstance(gens, torch.Generator):
            return view(x, size, gens, region)
        if len(gens) != x.shape[0]:
            raise ParameterError(f"{len(gens)} generators for {x.shape[0]} images (source images take none: give "
                                 "one generator)")
        return torch.cat([view(x[i : i + 1], size, g, region) for i, g in enumerate(gens)])

    def encode_views(self, images: torch.Tensor, source: torch.Tensor | None, region) -> dict[int, tuple]:
        """Build each distinct view once and encode all of them in one forward pass."""
        views: dict[int, View] = {}
        for t in self.terms:
            if t.uses_clip:
                views.setdefault(id(t.view), t.view)
        x = images if source is None else torch.cat([images, source])
        size = self.clip.image_size
        batches, counts = [], []
        for view in views.values():
            v = self.draw(view, x, size, region) if view is not None else x
            if v.shape[-1] != size or v.shape[-2] != size:
                v = F.interpolate(v, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            batches.append(v)
            counts.append(v.shape[0])
        if not batches:
            return {}
        batch = batches[0] if len(batches) == 1 else torch.cat(batches)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        emb = self.clip.encode_image(batch)
        out = {}
        b = x.shape[0]
        for key, chunk in zip(views, emb.split(counts)):
            chunk = chunk.view(b, -1, chunk.shape[-1])
            out[key] = (chunk[: images.shape[0]], chunk[images.shape[0]:] if source is not None else None)
        return out

    def __call__(self, images: torch.Tensor, **ctx: Any) -> GuideOutput:
        check_images(images)
        mask = prepare_mask(self.mask, images) if self.mask is not None else None
        ctx["mask"] = mask
        source = ctx.get("source_images")
        if source is not None:
            source = focus(check_images(source, "source_images").to(images), mask)
        elif any(t.uses_clip and t.paired for t in self.terms):
            raise ParameterError("a paired directional term needs source_images=... in the guide call")
        region = mask_box(mask) if mask is not None else None
        embs = self.encode_views(focus(images, mask), source, region)
        total = images.new_zeros(())
        values: dict[str, float] = {}
        for t in self.terms:
            emb, src = embs.get(id(t.view), (None, None)) if t.uses_clip else (None, None)
            value = t(emb, src, images, ctx)
            total = total + t.weight * value
            values[t.name] = float(value.detach())
        values.update(ctx.get("stats", {}))
        values["loss"] = float(total.detach())
        return GuideOutput(total, values)
