"""The StyleGAN family's methods as the app, API, presets and batch CLI see them."""

from __future__ import annotations

from clipkit.methods.stylegan.invert import SPACES, InvertSettings, invert
from clipkit.methods.stylegan.models import resolve_generator
from clipkit.methods.stylegan.network import NOISE_MODES
from clipkit.methods.stylegan.sample import SampleSettings, stylegan_sample
from clipkit.registry import Control, ImageInput, Method, check_with

TITLE = "StyleGAN"
ORDER = 25
_GENERATOR = Control("Generator", "shipped: world-stylegan2; or a StyleGAN2 file (.safetensors, rosinality .pt, "
                     "NVIDIA .pkl)", advanced=True)


def methods() -> list[Method]:
    check = check_with(lambda s: resolve_generator(s.generator))
    sample = Method(
        name="stylegan",
        title="Sample",
        family=TITLE,
        description="Draw pictures from a StyleGAN2 by seed: image i comes from seed + i, truncation pulls them "
                    "toward the average picture. Each result carries its latents for the editing methods.",
        settings_cls=SampleSettings,
        runner=stylegan_sample,
        controls={
            "seed": Control("Seed", "image i uses seed + i", kind="number"),
            "count": Control("Images", kind="slider", minimum=1, maximum=64, step=1),
            "truncation": Control("Truncation (ψ)", "1 = the generator's full variety, 0 = the average picture",
                                  kind="slider", minimum=0, maximum=1.5, step=0.05),
            "truncation_cutoff": Control("Truncate only the first layers", "empty = all layers", kind="number",
                                         advanced=True),
            "noise_mode": Control("Noise", "const: fixed per-layer noise (reproducible); none; random",
                                  kind="dropdown", choices=NOISE_MODES, advanced=True),
            "generator": _GENERATOR,
        },
        record_only=("seeds",),
        uses_clip=False,
        check=check,
    )
    inversion = Method(
        name="invert",
        title="Invert",
        family=TITLE,
        description="Find the StyleGAN2 latent that redraws a picture (the StyleGAN2 projector), so a real image "
                    "can be edited by the latent-space methods. The reconstruction's PSNR is reported.",
        settings_cls=InvertSettings,
        runner=invert,
        inputs=(ImageInput("image", "Picture to invert (centre square)"),),
        controls={
            "steps": Control("Steps", kind="slider", minimum=1, maximum=2000, step=1),
            "space": Control("Latent space", "W+: one latent per layer (closest fit); W: one for all (edits "
                             "stay closer to what the generator knows)", kind="dropdown", choices=SPACES),
            "perceptual_weight": Control("Perceptual weight", "CLIP early features (LPIPS in the paper)",
                                         kind="number", advanced=True),
            "noise_regularize": Control("Noise regularisation", kind="number", advanced=True),
            "seed": Control("Seed", kind="number"),
            "generator": _GENERATOR,
        },
        record_only=("psnr", "clip"),
        check=check,
    )
    return [sample, inversion]
