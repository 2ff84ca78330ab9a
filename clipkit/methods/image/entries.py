"""The pixel family's methods (text to image and edit by optimising pixels) as every surface sees them."""

from __future__ import annotations

from clipkit.guidance.prompts import TEMPLATE_SETS
from clipkit.methods.image.edit import EditSettings, edit
from clipkit.methods.image.generate import GenerateSettings, generate
from clipkit.registry import Control, ImageInput, Method

TITLE = "Pixels"
ORDER = 20
GENERATE_TAB = "Generate"  # text-to-image methods share one tab across families

# the pyramid setting generate and edit share (pyramid.py)
_DETAIL_DECAY = Control("Detail decay", "how fast fine detail may change relative to coarse shapes "
                        "(1 = equally; lower = cleaner, flatter images)", kind="slider",
                        minimum=0.1, maximum=1.0, step=0.05, advanced=True)
_PROMPT_HELP = "weighted prompts: 'a red circle:1 | blurry:-0.5'"
_TEMPLATES = Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)), advanced=True)


def methods() -> list[Method]:
    generate_entry = Method(
        name="generate",
        title="Pixels",
        family=GENERATE_TAB,
        description="Text to image: an image pyramid optimised so its cutouts match the prompt in CLIP space.",
        settings_cls=GenerateSettings,
        runner=generate,
        controls={
            "prompt": Control("Prompt", _PROMPT_HELP, kind="textarea"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "size": Control("Size (px)", kind="slider", minimum=16, maximum=512, step=8),
            "seed": Control("Seed", kind="number"),
            "lr": Control("Learning rate", kind="number", advanced=True),
            "cutouts": Control("Cutouts per step", kind="slider", minimum=1, maximum=128, step=1, advanced=True),
            "tv_weight": Control("Smoothness (TV weight)", kind="number", advanced=True),
            "rotate": Control("View rotation (degrees)", "each view turned by up to this much: the picture must read "
                              "as the prompt from every side", kind="slider", minimum=0, maximum=180, step=5,
                              advanced=True),
            "detail_decay": _DETAIL_DECAY,
            "templates": _TEMPLATES,
        },
        record_only=("clip", "seeds", "picked"),
        batch_setting="batch",
        text_field="prompt",
    )
    edit_entry = Method(
        name="edit",
        title="Edit",
        description="Edit a picture toward a prompt or from a source to a target text; paint a mask to edit only "
                    "that region (pixels outside it stay exactly as they were).",
        settings_cls=EditSettings,
        runner=edit,
        inputs=(ImageInput("image", "Image to edit", mask=True),),
        controls={
            "prompt": Control("Prompt", "weighted prompts: 'a blue star:1 | red:-0.5'; may stay empty",
                              kind="textarea"),
            "source_text": Control("Source text", "what the picture is now, e.g. 'a red circle'"),
            "target_text": Control("Target text", "what it should become, e.g. 'a blue circle'"),
            "prompt_weight": Control("Prompt strength (α)", kind="slider", minimum=0, maximum=5, step=0.05),
            "direction_weight": Control("Direction strength (β)", kind="slider", minimum=0, maximum=5, step=0.05),
            "content_weight": Control("Keep the original (content weight)", kind="slider", minimum=0, maximum=20,
                                      step=0.1),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "seed": Control("Seed", kind="number"),
            "feather": Control("Soften the mask's edge (px)", "the edit fades in over this width inside the "
                               "painted region; outside it nothing changes", kind="slider", minimum=0, maximum=32,
                               step=1),
            "tv_weight": Control("Smoothness (TV weight)", kind="number", advanced=True),
            "detail_decay": _DETAIL_DECAY,
            "lr": Control("Learning rate", kind="number", advanced=True),
            "cutouts": Control("Cutouts per step", kind="slider", minimum=1, maximum=128, step=1, advanced=True),
            "templates": _TEMPLATES,
        },
        record_only=("clip", "masked", "mask"),
    )
    return [generate_entry, edit_entry]
