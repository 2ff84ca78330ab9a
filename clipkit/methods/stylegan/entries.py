"""The StyleGAN family's methods as the app, API, presets and batch CLI see them."""

from __future__ import annotations

from clipkit.methods.stylegan.editing import DIRECTION_KIND, LATENT_KIND
from clipkit.methods.stylegan.global_directions import GlobalDirectionsSettings, global_directions
from clipkit.methods.stylegan.invert import SPACES, InvertSettings, invert
from clipkit.methods.stylegan.models import resolve_generator
from clipkit.methods.stylegan.nada import NADA_KIND, NadaSettings, nada
from clipkit.methods.stylegan.network import NOISE_MODES
from clipkit.methods.stylegan.sample import SampleSettings, stylegan_sample
from clipkit.methods.stylegan.styleclip_mapper import (
    MAPPER_KIND,
    MapperSettings,
    MapperTrainSettings,
    styleclip_mapper,
    styleclip_mapper_train,
)
from clipkit.methods.stylegan.styleclip_optimise import StyleClipOptimiseSettings, styleclip_optimise
from clipkit.methods.stylegan.stylemc import StyleMCSettings, stylemc
from clipkit.registry import ArtifactInput, Control, ImageInput, Method, check_with

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
        record_only=("seeds", "picked"),
        batch_setting="count",
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
    return [sample, inversion, *edit_methods(check)]


_START = ArtifactInput("latent", "Start latent (from Sample or Invert); none: the seeds below", LATENT_KIND)
_START_RECORD = ("latent", "seeds", "latent_sha256", "latent_generator")
_SEED = Control("Seed", "the start picture: image i uses seed + i (a start latent replaces them)", kind="number")
_COUNT = Control("Images", kind="slider", minimum=1, maximum=16, step=1)
_TRUNC = Control("Truncation (ψ)", "of the start pictures drawn from seeds", kind="slider", minimum=0, maximum=1.5,
                 step=0.05, advanced=True)
_PROMPT = Control("Prompt", "what the picture should show", kind="text")


def edit_methods(check) -> list[Method]:
    """StyleCLIP (optimisation, mapper, global directions), StyleMC and StyleGAN-NADA."""
    optimise = Method(
        name="styleclip_optimise",
        title="StyleCLIP: optimise",
        family=TITLE,
        description="Edit a picture toward a prompt by optimising its W+ latent (StyleCLIP latent optimisation): "
                    "CLIP loss + a pull back to the start latent. Slow (hundreds of steps) but needs nothing "
                    "trained beforehand.",
        settings_cls=StyleClipOptimiseSettings,
        runner=styleclip_optimise,
        inputs=(_START,),
        controls={
            "prompt": _PROMPT,
            "steps": Control("Steps", "0 redraws the start", kind="slider", minimum=0, maximum=1000, step=1),
            "l2_lambda": Control("Stay close (λ L2)", "pull toward the start latent (the paper: 0.008)",
                                 kind="number"),
            "id_lambda": Control("Identity (λ ID)", "keep the original's look (CLIP early features here)",
                                 kind="number", advanced=True),
            "cutouts": Control("Cutouts", "0: the whole image (the paper)", kind="number", advanced=True),
            "seed": _SEED, "count": _COUNT, "truncation": _TRUNC, "generator": _GENERATOR,
        },
        record_only=("clip", "identity", *_START_RECORD),
        text_field="prompt",
        check=check,
    )
    train = Method(
        name="styleclip_mapper_train",
        title="StyleCLIP: train a mapper",
        family=TITLE,
        description="Train a StyleCLIP latent mapper for one prompt (three small MLPs over the coarse, medium "
                    "and fine W+ layers). The trained mapper then edits any picture in one pass "
                    "('StyleCLIP: mapper').",
        settings_cls=MapperTrainSettings,
        runner=styleclip_mapper_train,
        controls={
            "prompt": _PROMPT,
            "steps": Control("Steps", "the paper: 50,000 on a GPU", kind="slider", minimum=1, maximum=20000,
                             step=1),
            "l2_lambda": Control("Stay close (λ L2)", kind="number", advanced=True),
            "id_lambda": Control("Identity (λ ID)", kind="number", advanced=True),
            "optimizer": Control("Optimiser", kind="dropdown", choices=("ranger", "adam"), advanced=True),
            "seed": Control("Seed", kind="number"), "generator": _GENERATOR,
        },
        record_only=("clip", "identity"),
        text_field="prompt",
        check=check,
    )
    apply_mapper = Method(
        name="styleclip_mapper",
        title="StyleCLIP: mapper",
        family=TITLE,
        description="Edit pictures with a trained StyleCLIP mapper in one forward pass: w + α·M(w) "
                    "(α = 0 leaves the picture as it is).",
        settings_cls=MapperSettings,
        runner=styleclip_mapper,
        inputs=(ArtifactInput("mapper", "Trained mapper", MAPPER_KIND, required=True), _START),
        controls={
            "alpha": Control("Strength (α)", "0.1: as trained", kind="slider", minimum=-0.5, maximum=0.5,
                             step=0.01),
            "seed": _SEED, "count": _COUNT, "truncation": _TRUNC, "generator": _GENERATOR,
        },
        record_only=("mapper_prompt", "mapper_sha256", *_START_RECORD),
        uses_clip=False,
        check=check,
        live=("alpha",),
    )
    directions = Method(
        name="global_directions",
        title="StyleCLIP: global directions",
        family=TITLE,
        description="Edit along a text direction (neutral -> target) in StyleSpace, without optimisation. The "
                    "first run for a generator computes each channel's effect in CLIP space once (minutes) and "
                    "caches it; later edits take a fraction of a second.",
        settings_cls=GlobalDirectionsSettings,
        runner=global_directions,
        inputs=(_START,),
        controls={
            "neutral": Control("Neutral text", "what the picture is now, e.g. 'a photo on a plain background'",
                               kind="text"),
            "target": Control("Target text", "the same with the change, e.g. 'a photo on a striped background'",
                              kind="text"),
            "alpha": Control("Strength (α)", kind="slider", minimum=-10, maximum=10, step=0.1),
            "beta": Control("Disentanglement (β)", "higher: fewer channels move, a narrower edit", kind="slider",
                            minimum=0.0, maximum=0.5, step=0.01),
            "seed": _SEED, "count": _COUNT, "truncation": _TRUNC, "generator": _GENERATOR,
        },
        record_only=("clip", "channels", "stats_file", "stats_cached", *_START_RECORD),
        text_field="target",
        check=check,
        live=("alpha", "beta"),
    )
    mc = Method(
        name="stylemc",
        title="StyleMC",
        family=TITLE,
        description="Find one StyleSpace direction for a prompt over a batch of seeds in seconds (StyleMC), then "
                    "apply it to any picture at a chosen strength.",
        settings_cls=StyleMCSettings,
        runner=stylemc,
        inputs=(_START, ArtifactInput("direction", "A found direction (apply it: no search)", DIRECTION_KIND)),
        controls={
            "prompt": _PROMPT,
            "change_power": Control("Strength", "0 leaves the picture as it is", kind="slider", minimum=-100,
                                    maximum=100, step=1),
            "identity_weight": Control("Identity weight", "the paper: high 2, medium 0.5, low 0.1, none 0",
                                       kind="number", advanced=True),
            "seed": _SEED, "count": _COUNT, "truncation": _TRUNC, "generator": _GENERATOR,
        },
        record_only=("clip", "mode", "gradient_steps", "pruned_channels", "channels", "identity", "direction_sha256",
                     "direction_prompt", *_START_RECORD),
        text_field="prompt",
        check=check,
        live=("change_power",),
        live_reuse=("direction",),
    )
    adapt = Method(
        name="nada",
        title="StyleGAN-NADA",
        family=TITLE,
        description="Move the whole generator to a new domain described by text (source -> target) with no "
                    "images (StyleGAN-NADA). Shows each picture and its adapted twin side by side.",
        settings_cls=NadaSettings,
        runner=nada,
        inputs=(_START, ArtifactInput("network", "An adapted generator (apply it: no training)", NADA_KIND)),
        controls={
            "source": Control("Source text", "the domain now, e.g. 'a bright photo'", kind="text"),
            "target": Control("Target text", "the new domain, e.g. 'a dark photo'", kind="text"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=2000, step=1),
            "layers_k": Control("Layers per step", "adaptive freezing: train the k layers that matter most",
                                kind="slider", minimum=1, maximum=18, step=1, advanced=True),
            "seed": _SEED, "count": _COUNT, "truncation": _TRUNC, "generator": _GENERATOR,
        },
        record_only=("clip", "mode", "trained_layers", "layer_counts", "network_sha256", "network_source",
                     "network_target", *_START_RECORD),
        text_field="target",
        check=check,
    )
    return [optimise, train, apply_mapper, directions, mc, adapt]
