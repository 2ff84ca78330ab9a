"""The one list of methods the app, the API, presets and the batch CLI know about.

Every surface (Gradio tabs, ``generators.api.run``, preset validation, ``app.py batch``) reads this registry, so a
new back-end becomes available everywhere by adding one ``Method`` entry in ``_builtin_methods``. An entry whose
module fails to import is left out (no placeholder tab for a back-end that does not work); an entry whose weights
are missing stays in, and ``Method.check`` tells the user which file is missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from guidance.errors import ClipKitError, ParameterError
from guidance.runs import CancelToken, RunResult, StepCallback, StepInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Control:
    """How the app shows one settings field; fields without one get a widget from their type, under Advanced."""

    label: str | None = None
    info: str | None = None
    kind: str | None = None  # "text", "textarea", "slider", "number", "dropdown", "checkbox"; None: from the type
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    advanced: bool = False


@dataclass(frozen=True)
class ImageInput:
    """An image argument of a method's run function; ``mask=True`` lets the user paint a region on it."""

    name: str
    label: str
    mask: bool = False


# runner(settings, *, clip, callback, cancel, progress, **images) -> RunResult
Runner = Callable[..., RunResult]


@dataclass(frozen=True)
class Method:
    """One back-end as every surface sees it."""

    name: str
    title: str
    description: str
    settings_cls: type
    runner: Runner
    inputs: tuple[ImageInput, ...] = ()
    controls: dict[str, Control] = field(default_factory=dict)
    uses_clip: bool = True
    # Keys a result's settings record carries beside the settings (derived facts such as the CLIP actually used);
    # dropped when an output is loaded back as a preset.
    record_only: tuple[str, ...] = ()
    # For batch runs of methods without image inputs: the text setting a .txt input file fills.
    text_field: str | None = None
    check: Callable[[Any], str | None] | None = None
    family: str = ""  # the app groups methods of one family under one tab (default: the method's own tab)
    # Methods whose presets this one accepts too -> the settings it takes from them (one artist preset for
    # CLIPstyler also drives the feed-forward stylizer and PODA: prompt, seed, size ...; not lr or steps, which
    # mean other things there).
    borrows: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def field_names(self) -> list[str]:
        return [f.name for f in fields(self.settings_cls)]

    def defaults(self) -> Any:
        return self.settings_cls()

    def missing(self, settings: Any | None = None, test_models: bool = False) -> str | None:
        """A message naming missing weights for these settings (None when all is there): the CLIP its
        ``model`` / ``pretrained`` name (not checked with ``test_models``, which swap the tiny CLIP in), then
        the method's own ``check``."""
        s = settings if settings is not None else self.defaults()
        found = []
        if self.uses_clip and not test_models and hasattr(s, "model"):
            found.append(check_clip(s))
        if self.check is not None:
            try:
                found.append(self.check(s))
            except ClipKitError as e:
                found.append(str(e))
        return " ".join(m for m in found if m) or None


def check_clip(s: Any) -> str | None:
    """For methods with ``model`` / ``pretrained`` settings: a message when that CLIP's weights are missing."""
    from guidance.clip import resolve_weights

    try:
        resolve_weights(s.model, s.pretrained)
    except ClipKitError as e:
        return f"CLIP '{s.model}' is not available: {e}"
    return None


# -------------------------------------------------------------------------------------------------- diffusion
_GENERATE_FAMILY = "Generate"


def _diffusion_entry() -> Method:
    from generators.diffusion.clip_guided_diffusion import GUIDANCE_FORMS, DiffusionSettings, clip_guided_diffusion
    from generators.diffusion.latent_model import packaged_latent_models, resolve_latent_model
    from guidance.prompts import TEMPLATE_SETS

    def run(settings: DiffusionSettings, *, clip=None, callback=None, cancel=None, progress=False) -> RunResult:
        return clip_guided_diffusion(settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    def check(s: DiffusionSettings) -> str | None:
        try:
            resolve_latent_model(s.diffusion_model)
        except ClipKitError as e:
            return str(e)
        return None

    return Method(
        name="diffusion",
        title="Diffusion",
        family=_GENERATE_FAMILY,
        description="Text to image with a diffusion model's prior: DDIM sampling of a latent diffusion model "
                    "given the prompt (classifier-free guidance, for a text-conditioned model) and steered at "
                    "every step by the CLIP's gradient on the predicted clean image.",
        settings_cls=DiffusionSettings,
        runner=run,
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
        record_only=("clip", "diffusion_model_name", "text_conditioned"),
        text_field="prompt",
        check=check,
    )


# --------------------------------------------------------------------------------------------------- generate
# the pyramid setting generate and edit share (generators/image/pyramid.py)
_DETAIL_DECAY = Control("Detail decay", "how fast fine detail may change relative to coarse shapes "
                        "(1 = equally; lower = cleaner, flatter images)", kind="slider",
                        minimum=0.1, maximum=1.0, step=0.05, advanced=True)


def _generate_entry() -> Method:
    from generators.image.generate import GenerateSettings, generate
    from guidance.prompts import TEMPLATE_SETS

    def run(settings: GenerateSettings, *, clip=None, callback=None, cancel=None, progress=False) -> RunResult:
        return generate(settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    return Method(
        name="generate",
        title="Pixels",
        family=_GENERATE_FAMILY,
        description="Text to image: an image pyramid optimised so its cutouts match the prompt in CLIP space.",
        settings_cls=GenerateSettings,
        runner=run,
        controls={
            "prompt": Control("Prompt", "weighted prompts: 'a red circle:1 | blurry:-0.5'", kind="textarea"),
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
            "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                                 advanced=True),
        },
        record_only=("clip",),
        text_field="prompt",
    )


# ------------------------------------------------------------------------------------------------------- edit
def _edit_entry() -> Method:
    from generators.image.edit import TEMPLATE_SETS, EditSettings, edit

    def run(settings: EditSettings, *, image, mask=None, clip=None, callback=None, cancel=None,
            progress=False) -> RunResult:
        return edit(image, mask, settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    return Method(
        name="edit",
        title="Edit",
        description="Edit a picture toward a prompt or from a source to a target text; paint a mask to edit only "
                    "that region (pixels outside it stay exactly as they were).",
        settings_cls=EditSettings,
        runner=run,
        inputs=(ImageInput("image", "Image to edit",
                           mask=True),),
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
            "tv_weight": Control("Smoothness (TV weight)", kind="number", advanced=True),
            "detail_decay": _DETAIL_DECAY,
            "lr": Control("Learning rate", kind="number", advanced=True),
            "cutouts": Control("Cutouts per step", kind="slider", minimum=1, maximum=128, step=1, advanced=True),
            "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                                 advanced=True),
        },
        record_only=("clip", "masked", "mask"),
    )


# ---------------------------------------------------------------------------------------------------- enhance
@dataclass
class EnhanceSettings:
    """Backlit enhancement: which trained illumination network, and how strongly to apply it."""

    checkpoint: str = "clip-lit"
    strength: float = 1.0
    tile: int = 0  # core size of tiles in pixels; 0 = automatic (tiles only images above ~2 MP)

    def validate(self) -> EnhanceSettings:
        if not 0 <= self.strength <= 4:
            raise ParameterError(f"strength={self.strength} must be in [0, 4]")
        if self.tile != 0 and not 64 <= self.tile <= 8192:
            raise ParameterError(f"tile={self.tile} must be 0 (automatic) or in 64..8192")
        if not self.checkpoint:
            raise ParameterError("checkpoint must name a published network (e.g. 'clip-lit') or a file")
        return self


def _enhance_entry() -> Method:
    """Adapter over ``generators.enhance.api`` (tensor in, tensor + record out) to the shared method pattern."""
    from generators.enhance import api as enh
    from generators.enhance import checkpoints

    def run(settings: EnhanceSettings, *, image, clip=None, callback: StepCallback | None = None,
            cancel: CancelToken | None = None, progress: bool = False) -> RunResult:
        from guidance.clip import default_device
        from guidance.images import as_tensor

        x = as_tensor(image)
        s = settings
        if cancel is not None and cancel.cancelled:
            return RunResult(x, {"method": "enhance", **asdict(s)}, [], {}, cancelled=True)
        t0 = time.perf_counter()
        try:
            out, record = enh.enhance_image_tensor(x, s.checkpoint, tile=s.tile or "auto", strength=s.strength,
                                                   device=str(default_device()))
        except checkpoints.CheckpointError as e:
            raise ParameterError(str(e)) from e
        seconds = time.perf_counter() - t0
        values = {"dark_region_gain": float(record["dark_region_gain"]),
                  "illumination_mean": float(record["illumination_mean"])}
        out = out.cpu()
        if callback is not None:
            callback(StepInfo(1, 1, values, out))
        extras = {k: record[k] for k in ("weights_sha256", "before", "after", "ms_per_megapixel") if k in record}
        return RunResult(out, {"method": "enhance", **asdict(s)}, [values], {"enhance_s": seconds}, extras=extras)

    def check(s: EnhanceSettings) -> str | None:
        try:
            checkpoints.resolve(s.checkpoint)
        except checkpoints.CheckpointError as e:
            return str(e)
        return None

    return Method(
        name="enhance",
        title="Backlit enhancement",
        description="Brightens back-lit photos with a published CLIP-LIT / RAVE illumination network, full size.",
        settings_cls=EnhanceSettings,
        runner=run,
        inputs=(ImageInput("image", "Back-lit photo"),),
        controls={
            "checkpoint": Control("Network", "published CLIP-LIT / RAVE weights, or a file path", kind="dropdown",
                                  choices=tuple(checkpoints.PUBLISHED)),
            "strength": Control("Strength", "0 = unchanged, 1 = as trained", kind="slider", minimum=0, maximum=2,
                                step=0.05),
            "tile": Control("Tile size (0 = automatic)", kind="number", advanced=True),
        },
        uses_clip=False,
        check=check,
    )


# ------------------------------------------------------------------------------------------------------ style
_STYLE_FAMILY = "Style transfer"


def _style_shared(settings_cls: type) -> tuple[str, ...]:
    """The settings a CLIPstyler artist preset hands the other style methods (the style back-end's SHARED)."""
    from generators.style.presets import SHARED

    return tuple(f.name for f in fields(settings_cls) if f.name in SHARED)


def _clipstyler_entry() -> Method:
    from generators.style.clipstyler import TEMPLATE_SETS, ClipStylerSettings, clipstyler

    def run(settings: ClipStylerSettings, *, image, clip=None, callback=None, cancel=None,
            progress=False) -> RunResult:
        return clipstyler(image, settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    return Method(
        name="clipstyler",
        title="CLIPstyler",
        family=_STYLE_FAMILY,
        description="Style a photo from a text prompt: a small network is optimised per prompt so patches of its "
                    "output move from the source text toward the prompt in CLIP space, keeping the content.",
        settings_cls=ClipStylerSettings,
        runner=run,
        inputs=(ImageInput("image", "Content image"),),
        controls={
            "prompt": Control("Style prompt", "e.g. 'oil painting of flowers'", kind="textarea"),
            "source": Control("Source text", "what the input is, e.g. 'a photo'"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "size": Control("Long side (px)", kind="slider", minimum=32, maximum=1024, step=16),
            "seed": Control("Seed", kind="number"),
            "lambda_patch": Control("Patch direction strength (α)", kind="number"),
            "lambda_dir": Control("Global direction strength (β)", kind="number"),
            "lambda_c": Control("Keep the content (content weight)", kind="number"),
            "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                                 advanced=True),
        },
        record_only=("clip", "content_features", "content_layers"),
    )


def _stylize_entry() -> Method:
    from generators.style.feedforward import StylizeSettings, resolve_checkpoint, stylize

    def run(settings: StylizeSettings, *, image, clip=None, callback=None, cancel=None,
            progress=False) -> RunResult:
        return stylize(image, settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    def check(s: StylizeSettings) -> str | None:
        if not resolve_checkpoint(s.checkpoint).is_file():
            return (f"no trained stylizer at {s.checkpoint}; train one with `python -m generators.style.cli "
                    "train-stylizer --content DIR --out PATH` and set 'checkpoint' to it")
        return None

    return Method(
        name="stylize",
        title="Feed-forward",
        family=_STYLE_FAMILY,
        description="Instant style transfer for any prompt: one pass of a text-conditioned stylizer network "
                    "(trained once with train-stylizer).",
        settings_cls=StylizeSettings,
        runner=run,
        inputs=(ImageInput("image", "Content image"),),
        controls={
            "prompt": Control("Style prompt", kind="textarea"),
            "checkpoint": Control("Stylizer checkpoint", "a .safetensors written by train-stylizer"),
            "size": Control("Long side (px; empty = input size)", kind="number"),
            "seed": Control("Seed", kind="number"),
        },
        record_only=("clip", "trained_steps"),
        borrows={"clipstyler": _style_shared(StylizeSettings)},
        check=check,
        uses_clip=False,  # its text encoder is fixed by the checkpoint, so test mode cannot swap in the tiny CLIP
    )


def _poda_entry() -> Method:
    from generators.style.poda import TEMPLATE_SETS, PodaSettings, poda

    def run(settings: PodaSettings, *, image, clip=None, callback=None, cancel=None, progress=False) -> RunResult:
        return poda(image, settings, clip=clip, callback=callback, cancel=cancel, progress=progress)

    return Method(
        name="poda",
        title="PODA",
        family=_STYLE_FAMILY,
        description="Prompt-driven domain shift (PODA): CLIP feature statistics are moved toward a described "
                    "domain ('driving at night'), then rendered back to pixels as a preview.",
        settings_cls=PodaSettings,
        runner=run,
        inputs=(ImageInput("image", "Photo"),),
        controls={
            "prompt": Control("Target domain", "e.g. 'driving at night', 'in the snow'", kind="textarea"),
            "steps": Control("Steps", kind="slider", minimum=1, maximum=1000, step=1),
            "size": Control("Long side (px)", kind="slider", minimum=32, maximum=1024, step=16),
            "preview_steps": Control("Preview render steps (0 = none)", kind="slider", minimum=0, maximum=500,
                                     step=1),
            "seed": Control("Seed", kind="number"),
            "templates": Control("Prompt templates", kind="dropdown", choices=tuple(sorted(TEMPLATE_SETS)),
                                 advanced=True),
        },
        record_only=("clip", "layer", "pin_loss_start", "pin_loss_end"),
        borrows={"clipstyler": _style_shared(PodaSettings)},
    )


# --------------------------------------------------------------------------------------------------- registry
_BUILTIN: tuple[Callable[[], Method], ...] = (_diffusion_entry, _generate_entry, _edit_entry, _clipstyler_entry,
                                              _stylize_entry, _poda_entry, _enhance_entry)
_METHODS: dict[str, Method] = {}
_SKIPPED: dict[str, str] = {}
_LOCK = threading.Lock()
_LOADED = False


def register(method: Method) -> Method:
    """Add (or replace) a method; the app, API, presets and batch CLI pick it up."""
    with _LOCK:
        _METHODS[method.name] = method
    return method


def _load_builtin() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        for entry in _BUILTIN:
            try:
                m = entry()
            except Exception as e:  # a back-end that does not import gets no tab, and says why in the log
                _SKIPPED[entry.__name__.strip("_").removesuffix("_entry")] = f"{type(e).__name__}: {e}"
                log.warning("method %s unavailable: %s", entry.__name__, e)
                continue
            _METHODS.setdefault(m.name, m)
        _LOADED = True


def methods() -> dict[str, Method]:
    """Name -> Method for every back-end that imports, in tab order."""
    _load_builtin()
    return dict(_METHODS)


def skipped() -> dict[str, str]:
    """Built-in back-ends left out because they failed to import, with the reason."""
    _load_builtin()
    return dict(_SKIPPED)


def get_method(name: str) -> Method:
    """The method called ``name``, or an error listing the ones that exist."""
    found = methods().get(name)
    if found is None:
        why = f" ({skipped()[name]})" if name in skipped() else ""
        raise ParameterError(f"unknown method '{name}'{why}; available methods: {', '.join(methods()) or 'none'}")
    return found
