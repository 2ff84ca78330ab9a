"""clipkit's CLIP guidance core: models, prompts, views, losses, regions and the Guide that combines them.

    from clipkit.guidance import load_clip, Guide, PromptTerm, Cutouts
    clip = load_clip("world-guide")
    guide = Guide(clip, [PromptTerm(prompts="a red circle:1 | blurry:-0.5", view=Cutouts(32))])
    out = guide(images)          # images (B, 3, H, W) in [0, 1]
    out.loss.backward(); out.values   # per-term floats for progress display

The names below load on first use (PEP 562): importing one light submodule (``clipkit.guidance.errors``) must not
pull in open_clip, kornia and torchvision, which the web app's first page does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "clipkit.guidance.augment": ("Cutouts", "PatchCrops"),
    "clipkit.guidance.clip": ("ClipModel", "available_models", "get_clip", "load_clip", "tiny_clip"),
    "clipkit.guidance.errors": ("Cancelled", "CheckpointError", "ClipKitError", "ImageError", "ModelNameError",
                                "ParameterError", "PromptError", "WeightsNotFoundError"),
    "clipkit.guidance.guide": ("DirectionalTerm", "Guide", "GuideOutput", "LatentL2Term", "PatchDirectionalTerm",
                               "PromptPairTerm", "PromptTerm", "ResidualVectorTerm", "Term", "TVTerm"),
    "clipkit.guidance.prompts": ("IMAGENET_TEMPLATES", "encode_prompt", "encode_prompts", "parse_prompts"),
    "clipkit.guidance.runs": ("CancelToken", "RunResult", "StepInfo"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'clipkit.guidance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

