"""The style family's methods (CLIPstyler, the feed-forward stylizer, PODA) as every surface sees them.

Artist presets are written for ``clipstyler``; the other two borrow the keys in ``SHARED`` from them, so one
artist preset drives all three methods (steps, lr ... mean other things there, so they are not shared).
"""

from __future__ import annotations

from dataclasses import fields

from clipkit.guidance.prompts import TEMPLATE_SETS
from clipkit.methods.style.clipstyler import ClipStylerSettings, clipstyler
from clipkit.methods.style.feedforward import StylizeSettings, resolve_checkpoint, stylize
from clipkit.methods.style.poda import PodaSettings, poda
from clipkit.registry import ArtifactInput, Control, ImageInput, Method

TITLE = "Style transfer"
ORDER = 30
SHARED = ("prompt", "seed", "size", "templates", "model", "pretrained")
_TEMPLATES = Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)), advanced=True)


def _shared(settings_cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(settings_cls) if f.name in SHARED)


def _check_stylizer(s: StylizeSettings) -> str | None:
    if not resolve_checkpoint(s.checkpoint).is_file():
        return (f"no trained stylizer at {s.checkpoint}; train one with `clipkit train stylizer --content DIR "
                "--out PATH` and set 'checkpoint' to it")
    return None


def methods() -> list[Method]:
    photo = (ImageInput("image", "Content image"),)
    trained_net = ArtifactInput("network", "Trained style network (apply it: no optimisation)",
                                "network/clipstyler-unet")
    clipstyler_entry = Method(
        name="clipstyler",
        title="CLIPstyler",
        family=TITLE,
        description="Style a photo from a text prompt: a small network is optimised per prompt so patches of its "
                    "output move from the source text toward the prompt in CLIP space, keeping the content.",
        settings_cls=ClipStylerSettings,
        runner=clipstyler,
        inputs=(*photo, trained_net),
        controls={
            "prompt": Control("Style prompt", "e.g. 'oil painting of flowers'", kind="textarea"),
            "source": Control("Source text", "what the input is, e.g. 'a photo'"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "size": Control("Long side (px)", kind="slider", minimum=32, maximum=1024, step=16),
            "seed": Control("Seed", kind="number"),
            "lambda_patch": Control("Patch direction strength (α)", kind="number"),
            "lambda_dir": Control("Global direction strength (β)", kind="number"),
            "lambda_c": Control("Keep the content (content weight)", kind="number"),
            "templates": _TEMPLATES,
        },
        record_only=("clip", "content_features", "content_layers", "mode", "network_sha256", "network_prompt"),
    )
    stylize_entry = Method(
        name="stylize",
        title="Feed-forward",
        family=TITLE,
        description="Instant style transfer for any prompt: one pass of a text-conditioned stylizer network "
                    "(trained once with `clipkit train stylizer`).",
        settings_cls=StylizeSettings,
        runner=stylize,
        inputs=photo,
        controls={
            "prompt": Control("Style prompt", kind="textarea"),
            "checkpoint": Control("Stylizer checkpoint", "a .safetensors written by `clipkit train stylizer`"),
            "size": Control("Long side (px; empty = input size)", kind="number"),
            "seed": Control("Seed", kind="number"),
            "strength": Control("Strength", "0 = the photo, 1 = as the stylizer paints it; moves live after a Run",
                                kind="slider", minimum=0, maximum=2, step=0.05),
        },
        record_only=("clip", "trained_steps"),
        borrows={"clipstyler": _shared(StylizeSettings)},
        check=_check_stylizer,
        uses_clip=False,  # its text encoder is fixed by the checkpoint, so test mode cannot swap in the tiny CLIP
        live=("strength",),
    )
    poda_entry = Method(
        name="poda",
        title="PODA",
        family=TITLE,
        description="Prompt-driven domain shift (PODA): CLIP feature statistics are moved toward a described "
                    "domain ('driving at night'), then rendered back to pixels as a preview.",
        settings_cls=PodaSettings,
        runner=poda,
        inputs=(ImageInput("image", "Photo"),),
        controls={
            "prompt": Control("Target domain", "e.g. 'driving at night', 'in the snow'", kind="textarea"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "size": Control("Long side (px)", kind="slider", minimum=32, maximum=1024, step=16),
            "preview_steps": Control("Preview render steps (0 = none)", kind="slider", minimum=0, maximum=500,
                                     step=1),
            "seed": Control("Seed", kind="number"),
            "templates": _TEMPLATES,
        },
        record_only=("clip", "layer", "pin_loss_start", "pin_loss_end"),
        borrows={"clipstyler": _shared(PodaSettings)},
    )
    return [clipstyler_entry, stylize_entry, poda_entry]
