"""clipkit's CLIP guidance core: models, prompts, views, losses, regions and the Guide that combines them.

    from clipkit.guidance import load_clip, Guide, PromptTerm, Cutouts
    clip = load_clip("world-guide")
    guide = Guide(clip, [PromptTerm(prompts="a red circle:1 | blurry:-0.5", view=Cutouts(32))])
    out = guide(images)          # images (B, 3, H, W) in [0, 1]
    out.loss.backward(); out.values   # per-term floats for progress display
"""

from clipkit.guidance.augment import Cutouts, PatchCrops
from clipkit.guidance.clip import ClipModel, available_models, get_clip, load_clip, tiny_clip
from clipkit.guidance.errors import (
    Cancelled,
    CheckpointError,
    ClipKitError,
    ImageError,
    ModelNameError,
    ParameterError,
    PromptError,
    WeightsNotFoundError,
)
from clipkit.guidance.guide import (
    DirectionalTerm,
    Guide,
    GuideOutput,
    LatentL2Term,
    PatchDirectionalTerm,
    PromptPairTerm,
    PromptTerm,
    ResidualVectorTerm,
    Term,
    TVTerm,
)
from clipkit.guidance.prompts import IMAGENET_TEMPLATES, encode_prompt, encode_prompts, parse_prompts
from clipkit.guidance.runs import CancelToken, RunResult, StepInfo

__all__ = [
    "Cancelled", "CancelToken", "CheckpointError", "ClipKitError", "ClipModel", "Cutouts", "DirectionalTerm",
    "Guide", "GuideOutput", "IMAGENET_TEMPLATES", "ImageError", "LatentL2Term", "ModelNameError",
    "ParameterError", "PatchCrops", "PatchDirectionalTerm", "PromptError", "PromptPairTerm", "PromptTerm",
    "ResidualVectorTerm", "RunResult", "StepInfo", "TVTerm", "Term", "WeightsNotFoundError",
    "available_models", "encode_prompt", "encode_prompts", "get_clip", "load_clip", "parse_prompts", "tiny_clip",
]
