"""The diffusion family's methods as the app, API, presets and batch CLI see them."""

from __future__ import annotations

from clipkit.guidance.prompts import TEMPLATE_SETS
from clipkit.methods.diffusion.clip_guided_diffusion import GUIDANCE_FORMS, DiffusionSettings, clip_guided_diffusion
from clipkit.methods.diffusion.latent_model import packaged_latent_models, resolve_latent_model
from clipkit.registry import Control, Method, check_with

TITLE = "Diffusion"
ORDER = 10
GENERATE_TAB = "Generate"  # text-to-image methods share one tab across families


def methods() -> list[Method]:
    return [Method(
        name="diffusion",
        title="Diffusion",
        family=GENERATE_TAB,
        description="Text to image with a diffusion model's prior: DDIM sampling of a latent diffusion model "
                    "given the prompt (classifier-free guidance, for a text-conditioned model) and steered at "
                    "every step by the CLIP's gradient on the predicted clean image.",
        settings_cls=DiffusionSettings,
        runner=clip_guided_diffusion,
        controls={
            "prompt": Control("Prompt", "weighted prompts: 'a red circle:1 | blurry:-0.5'", kind="textarea"),
            "guidance_scale": Control("Guidance scale", "how hard CLIP steers (0 = the model's own samples)",
                                      kind="slider", minimum=0, maximum=3, step=0.05),
            "cfg_scale": Control("Text guidance (classifier-free)", "for a text-conditioned model: how strongly "
                                 "it draws the prompt itself (0 = no text, 1 = plain); others ignore it",
                                 kind="slider", minimum=0, maximum=10, step=0.5),
            "recurrence": Control("Passes per step (self-recurrence)", "more passes: stronger guidance that "
                                  "stays on the model's images, at that many times the time", kind="slider",
                                  minimum=1, maximum=10, step=1),
            "steps": Control("Sampling steps (DDIM)", kind="slider", minimum=1, maximum=250, step=1),
            "batch": Control("Images", "samples drawn together, each from its own noise", kind="slider", minimum=1,
                             maximum=16, step=1),
            "seed": Control("Seed", kind="number"),
            "guidance": Control("Guidance form", "eps: classifier guidance on the noise; x0: a step on the "
                                "predicted clean latent", kind="dropdown", choices=GUIDANCE_FORMS, advanced=True),
            "cutouts": Control("Views per step", kind="slider", minimum=1, maximum=64, step=1, advanced=True),
            "noise": Control("View noise", kind="slider", minimum=0, maximum=1, step=0.05, advanced=True),
            "eta": Control("DDIM eta", "0 = deterministic sampling, 1 = DDPM-like noise", kind="slider", minimum=0,
                           maximum=1, step=0.05, advanced=True),
            "size": Control("Output size (px)", kind="slider", minimum=16, maximum=512, step=8, advanced=True),
            "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                                 advanced=True),
            "diffusion_model": Control("Diffusion model", "packaged: " + (", ".join(packaged_latent_models())
                                       or "none") + "; or a model folder", advanced=True),
        },
        record_only=("clip", "diffusion_model_name", "text_conditioned", "seeds", "picked"),
        batch_setting="batch",
        text_field="prompt",
        check=check_with(lambda s: resolve_latent_model(s.diffusion_model)),
    )]
