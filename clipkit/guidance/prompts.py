"""Prompts: weighted / negative prompt syntax and template ensembling.

``"a watercolor painting:1 | blurry:-0.5"`` means: move toward the first, away from the second at half strength.
Template ensembling averages a prompt's embedding over phrasings ("a photo of a {}.", ...) as StyleGAN-NADA
does, which gives steadier directions than one phrasing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipkit.guidance.errors import PromptError

# The ImageNet-style phrasings used for zero-shot CLIP and by StyleGAN-NADA's text directions.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
PLAIN_TEMPLATES: tuple[str, ...] = ("{}",)
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"plain": PLAIN_TEMPLATES, "imagenet": IMAGENET_TEMPLATES}


@dataclass(frozen=True)
class WeightedPrompt:
    text: str
    weight: float = 1.0


def parse_prompts(spec: str | Sequence[str | WeightedPrompt | tuple[str, float]]) -> list[WeightedPrompt]:
    """Parse ``"text:weight | text:weight"`` (weight optional, default 1) or a list of prompts."""
    if isinstance(spec, str):
        parts = [p for p in spec.split("|")]
        items: list[WeightedPrompt] = []
        for part in parts:
            text, weight = part.strip(), 1.0
            head, sep, tail = text.rpartition(":")
            if sep:
                try:
                    weight = float(tail)
                    text = head.strip()
                except ValueError:
                    pass  # a colon inside the text, e.g. "style: art deco"
            items.append(WeightedPrompt(text, weight))
    else:
        items = [
            p if isinstance(p, WeightedPrompt) else WeightedPrompt(*p) if isinstance(p, tuple) else WeightedPrompt(p)
            for p in spec
        ]
    if not items or any(not p.text.strip(" \t\r\n:") for p in items):  # ":" alone is a weight without text
        raise PromptError(f"empty prompt in {spec!r}: every part needs some text, e.g. 'a red circle:1 | blurry:-0.5'")
    if all(p.weight == 0 for p in items):
        raise PromptError(f"all prompt weights are zero in {spec!r}")
    for p in items:
        if not abs(p.weight) <= 1e3:
            raise PromptError(f"prompt weight {p.weight} for '{p.text}' is out of range (|w| <= 1000)")
    return items


def encode_prompts(
    clip, prompts: Sequence[WeightedPrompt], templates: Sequence[str] = PLAIN_TEMPLATES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm embeddings (N, D), each averaged over `templates`, and weights (N,); one text batch."""
    if not prompts:
        raise PromptError("no prompts given")
    texts = [t.format(p.text) for p in prompts for t in templates]
    embs = clip.encode_text(texts).view(len(prompts), len(templates), -1).mean(1)
    embs = F.normalize(embs, dim=-1)
    weights = torch.tensor([p.weight for p in prompts], device=embs.device, dtype=embs.dtype)
    return embs, weights


def encode_prompt(clip, text: str, templates: Sequence[str] = PLAIN_TEMPLATES) -> torch.Tensor:
    """One unit-norm embedding (D,) for `text`, averaged over `templates`."""
    if not text or not text.strip():
        raise PromptError("empty prompt: give some text to guide toward")
    return encode_prompts(clip, [WeightedPrompt(text)], templates)[0][0]
