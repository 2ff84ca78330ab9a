"""The diffusion family's methods as the app, API, presets and batch CLI see them."""

from __future__ import annotations

from clipkit.guidance.prompts import TEMPLATE_SETS
from clipkit.methods.diffusion.clip_guided_diffusion import GUIDANCE_FORMS, DiffusionSettings, clip_guided_diffusion
from clipkit.methods.diffusion.img2img import Img2ImgSettings, img2img
from clipkit.methods.diffusion.latent_model import packaged_latent_models, resolve_latent_model
from clipkit.registry import Control, ImageInput, Method, check_with

TITLE = "Diffusion"
ORDER = 10
GENERATE_TAB = "Generate"  # text-to-image methods share one tab across families


def _sampling_controls() -> dict[str, Control]:
    """The controls of the sampling settings text to image and img2img share."""
    return {
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
        "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                             advanced=True),
        "diffusion_model": Control("Diffusion model", "packaged: " + (", ".join(packaged_latent_models())
                                   or "none") + "; or a model folder", advanced=True),
    }


_RECORD_ONLY = ("clip", "diffusion_model_name", "text_conditioned", "seeds", "picked")


def methods() -> list[Method]:
    check = check_with(lambda s: resolve_latent_model(s.diffusion_model))
    shared = _sampling_controls()
    text_to_image = Method(
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
            **shared,
            "size": Control("Output size (px)", kind="slider", minimum=16, maximum=512, step=8, advanced=True),
        },
        record_only=_RECORD_ONLY,
        batch_setting="batch",
        text_field="prompt",
        check=check,
    )
    image_to_image = Method(
        name="img2img",
        title="Img2img",
        description="Redraw a picture toward a prompt with the diffusion model (SDEdit): it is noised part of "
                    "the way (strength) and denoised with the same guidance as Generate. Paint a mask to redraw "
                    "only that region (Blended Latent Diffusion); pixels outside it stay exactly as they were.",
        settings_cls=Img2ImgSettings,
        runner=img2img,
        inputs=(ImageInput("image", "Picture to redraw", mask=True),),
        controls={
            "prompt": Control("Prompt", "what the picture should become: 'a blue circle'", kind="textarea"),
            "strength": Control("Strength", "how much is redrawn: low keeps the layout and colours, 1 draws anew",
                                kind="slider", minimum=0.05, maximum=1, step=0.05),
            "feather": Control("Soften the mask's edge (px)", "the redraw fades in over this width inside the "
                               "painted region; outside it nothing changes", kind="slider", minimum=0, maximum=32,
                               step=1),
            **shared,
        },
        record_only=(*_RECORD_ONLY, "steps_run", "masked", "mask"),
        batch_setting="batch",
        check=check,
    )
    return [text_to_image, image_to_image]
