"""The Python API: every method behind one call, taking PIL images or tensors and returning PIL images + a record.

    from clipkit.api import run, generate, diffusion, enhance, load_preset

    result = run("generate", prompt="a red circle", steps=100, seed=1)     # or run(preset="ink-sketch")
    diffusion(prompt="a red circle", batch=4).images  # sampled from the world latent diffusion model
    result.image.save("out.png")              # PIL; result.save("out.png") embeds the settings instead
    result.record                             # settings, final losses, timings: JSON-ready
    enhance(Image.open("backlit.jpg"), strength=0.8).image

A call holds no global state besides the shared, lazily loaded models (``guidance.clip.get_clip``): two calls in
one process, or in two threads, give the same results they give alone: every random draw comes from the run's own
``torch.Generator``, so runs go in parallel (the app's ``--concurrency``). Progress goes to ``callback`` (a
``StepInfo`` per step with per-loss values and now and then a preview tensor); a ``CancelToken`` stops a run after
the current step and the partial result comes back with ``record["cancelled"] = True``.

``clip="tiny"`` (or the environment variable ``CLIPKIT_TEST_MODELS=1``) swaps in the small random test CLIP, so
the plumbing can be exercised on any machine without weights.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipkit.guidance.artifacts import Artifact, as_artifact, kind_fits
from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.images import (
    as_tensor,
    decode_mask,
    load_image,
    load_mask,
    read_settings,
    save_image,
    tensor_to_pil,
    to_grey,
)
from clipkit.guidance.images import to_rgb as _to_rgb
from clipkit.guidance.limits import check_image_size
from clipkit.guidance.runs import SEED_RANGE, CancelToken, RunResult, StepCallback, StepInfo, with_seed
from clipkit.presets import (
    Preset,
    PresetError,
    list_presets,
    load_preset,
    make_preset,
    preset_values,
    save_preset,
    settings_dict,
    settings_from_dict,
)
from clipkit.registry import Method, get_method, methods

TEST_MODELS_ENV = "CLIPKIT_TEST_MODELS"

__all__ = ["Result", "run", "generate", "diffusion", "enhance", "build_settings", "methods", "get_method",
           "load_preset", "list_presets", "save_preset", "make_preset", "Preset", "PresetError", "CancelToken",
           "StepInfo", "Artifact", "load_artifacts", "test_models_enabled", "tiny_model", "preset_values", "result_of"]


def test_models_enabled() -> bool:
    """True when ``CLIPKIT_TEST_MODELS`` asks for the tiny random CLIP (tests, CI, demos without weights)."""
    return os.environ.get(TEST_MODELS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_TINY: ClipModel | None = None
_TINY_LOCK = threading.Lock()


def tiny_model() -> ClipModel:
    """The tiny test CLIP, built once per process and shared like ``get_clip`` models."""
    global _TINY
    with _TINY_LOCK:
        if _TINY is None:
            from clipkit.guidance.clip import tiny_clip

            _TINY = tiny_clip(0)
        return _TINY


@dataclass
class Result:
    """What a call returns: PIL images, the JSON-ready record (settings, losses, timings) and the raw run."""

    images: list[Image.Image]
    record: dict[str, Any]
    run: RunResult = field(repr=False)

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    @property
    def tensors(self) -> torch.Tensor:
        """The images as a (B, 3, H, W) float tensor in [0, 1]."""
        return self.run.images

    @property
    def history(self) -> list[dict[str, float]]:
        """Per-step loss values."""
        return self.run.history

    @property
    def settings(self) -> dict[str, Any]:
        return self.record["settings"]

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """Typed results the next method can take (``run(..., network=result)``)."""
        return self.run.artifacts

    def record_for(self, index: int) -> dict[str, Any]:
        """The record as image ``index`` alone: for a batch of per-image seeds (``Method.batch_setting``), its own
        seed and a batch of one, so loading the saved picture's settings re-runs that picture only."""
        settings = self.record.get("settings", {})
        key = _batch_setting(settings)
        n = len(self.images)
        if key is None or n < 2 or settings.get(key) != n:
            return self.record
        seeds = settings.get("seeds") or [settings["seed"] + i for i in range(n)]
        alone = {**settings, "seed": seeds[index], key: 1, "seeds": [seeds[index]], "picked": [index, n]}
        return {**self.record, "settings": alone}

    def save(self, path: str | os.PathLike, index: int = 0, protect: tuple = ()) -> Path:
        """Atomic PNG with the record embedded, so the file loads back as a preset (``load_preset(path)``); each
        artifact goes beside it as ``<stem>.<name>.safetensors``, named in the record (``load_artifacts``). A
        batch's latents are cut to image ``index``'s own, so a picked picture goes on to the next method alone."""
        path = Path(path)
        record = self.record_for(index)
        if self.run.artifacts:
            record = {**record, "artifacts": {k: dict(v) for k, v in record.get("artifacts", {}).items()}}
            for name, artifact in self.run.artifacts.items():
                target = path.with_name(f"{path.stem}.{name}.safetensors")
                mine = artifact.pick(index, len(self.images))  # the saved picture's own latent
                mine.save(target)
                record["artifacts"][name]["file"] = target.name
                if mine is not artifact:
                    record["artifacts"][name].update(mine.describe(), picked=[index, len(self.images)])
        return save_image(self.images[index], path, record, protect=protect)


def _batch_setting(settings: dict[str, Any]) -> str | None:
    """The recorded method's ``Method.batch_setting`` (None for methods without per-image seeds)."""
    method = methods().get(settings.get("method", ""))
    return method.batch_setting if method is not None else None


def batch_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of the whole batch a picked image's record came from (the inverse of ``Result.record_for``);
    any other settings as they are. Batch jobs compare an output with the run they would make by these."""
    picked = settings.get("picked")
    key = _batch_setting(settings)
    if key is None or not isinstance(picked, list) or len(picked) != 2 or not isinstance(settings.get("seed"), int):
        return settings
    index, count = picked
    whole = {k: v for k, v in settings.items() if k not in ("picked", "seeds")}
    return {**whole, "seed": (settings["seed"] - index) % SEED_RANGE, key: count}


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL image input as 8-bit RGB, as files are read (``guidance.images.to_rgb``): the pixel limit and the
    smallest size checked, EXIF orientation applied, 16-bit scaled, transparency over white, animations refused."""
    return _to_rgb(image, name)


def _as_input_tensor(image: Any, name: str) -> torch.Tensor:
    """PIL image, tensor, file path or an earlier Result (its first image) -> checked (B, 3, H, W) tensor; alpha
    and grey images become RGB. Every image input of every surface passes here: one pixel limit for all."""
    if isinstance(image, Result):
        image = image.tensors[:1]
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = to_rgb(image, name)
    if not isinstance(image, (Image.Image, torch.Tensor)):
        raise ParameterError(f"{name} must be a PIL image, a (B, 3, H, W) tensor in [0, 1] or a file path, "
                             f"got {type(image).__name__}")
    return as_tensor(image, name=name)


def _as_mask(mask: Any) -> torch.Tensor:
    """A region mask: PIL (white = edit) or tensor (B|1, 1, H, W) in [0, 1]; sizes checked like images."""
    if isinstance(mask, (str, os.PathLike)):
        mask = load_mask(mask)
    if isinstance(mask, Image.Image):
        return torch.from_numpy(np.asarray(to_grey(mask), dtype=np.float32) / 255.0)[None, None]
    if isinstance(mask, torch.Tensor):
        m = mask.float()
        while m.ndim < 4:
            m = m.unsqueeze(0)
        check_image_size(m.shape[-1], m.shape[-2], name="mask", count=m.shape[0] * m.shape[1])
        return m
    raise ParameterError(f"mask must be a PIL image or a tensor, got {type(mask).__name__}")


def recorded_mask(source: dict[str, Any] | str | os.PathLike) -> Image.Image | None:
    """The region mask a result was made with (from its record or its PNG), or None for an unmasked run.

    With the same input image, settings and this mask, ``run`` reproduces the result exactly."""
    record = read_settings(source) if isinstance(source, (str, os.PathLike)) else source
    settings = record.get("settings", record) if isinstance(record, dict) else {}
    text = settings.get("mask") if isinstance(settings, dict) else None
    return decode_mask(text) if text else None


def build_settings(method: str | None = None, settings: Any = None, **overrides: Any) -> tuple[Method, Any]:
    """(Method, validated Settings) from defaults, a preset (name, path, Preset), a dict or a Settings instance,
    with ``overrides`` applied on top; unknown keys and wrong types raise ``PresetError`` naming them."""
    if isinstance(settings, (str, os.PathLike, Preset)):
        preset = load_preset(settings)
        method = method or preset.method
        base = preset_values(get_method(method), preset)
    elif settings is None:
        if method is None:
            raise ParameterError(f"name a method or a preset; methods: {', '.join(methods())}")
        base = {}
    elif isinstance(settings, dict):
        base = dict(settings)
        rec_method = base.pop("method", None)
        method = method or rec_method
        if method is None:
            raise ParameterError("settings given as a dict need a method (argument or a 'method' key)")
        for key in get_method(method).record_only:
            base.pop(key, None)
    elif is_dataclass(settings):
        match = [m for m in methods().values() if isinstance(settings, m.settings_cls)]
        if not match:
            raise ParameterError(f"{type(settings).__name__} is not the Settings class of a registered method")
        if method is not None and match[0].name != method:
            raise ParameterError(f"{type(settings).__name__} belongs to method '{match[0].name}', not '{method}'")
        method, base = match[0].name, settings_dict(settings)
    else:
        raise ParameterError(f"settings must be a preset name/path, Preset, dict or Settings instance, "
                             f"got {type(settings).__name__}")
    m = get_method(method)
    # the seed policy (guidance.runs.resolve_seed): -1 draws one, huge ones are reduced; the record holds the result
    return m, with_seed(settings_from_dict(m.name, {**base, **overrides}))


def _clip_for(m: Method, clip: ClipModel | str | None) -> ClipModel | None:
    if not m.uses_clip:
        return None
    if isinstance(clip, ClipModel):
        return clip
    if clip == "tiny" or (clip is None and test_models_enabled()):
        return tiny_model()
    if clip is None:
        return None  # the method loads (once, shared) the CLIP its settings name
    raise ParameterError(f"clip must be a ClipModel, 'tiny' or None, got {clip!r}")


def run(
    method: str | None = None,
    settings: Any = None,
    *,
    preset: str | os.PathLike | Preset | None = None,
    clip: ClipModel | str | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> Result:
    """Run one method. Inputs go by their name: images (``image=...``, ``mask=...``: PIL, tensor, or an earlier
    ``Result``, whose first image is taken) and artifacts (an ``Artifact``, its file, or an earlier ``Result``
    holding one of the right kind); everything else overrides a setting. The same method, settings and seed give
    the same images."""
    if preset is not None:
        if settings is not None:
            raise ParameterError("pass either settings or preset, not both")
        settings = preset
    # the method may come from the preset: it must be known before kwargs split into images and overrides
    m = get_method(method) if method is not None else build_settings(None, settings)[0]
    image_names = {i.name for i in m.image_inputs} | ({"mask"} if any(i.mask for i in m.image_inputs) else set())
    wanted = {i.name: i for i in m.artifact_inputs}
    images = {k: v for k, v in kwargs.items() if k in image_names}
    given = {k: v for k, v in kwargs.items() if k in wanted}
    overrides = {k: v for k, v in kwargs.items() if k not in image_names and k not in wanted}
    m, s = build_settings(m.name, settings, **overrides)
    missing = [f"{i.name}=<PIL image or tensor>" for i in m.image_inputs if images.get(i.name) is None]
    missing += [f"{i.name}=<{i.kind} artifact or its file>" for i in m.artifact_inputs
                if i.required and given.get(i.name) is None]
    if missing:
        raise ParameterError(f"method '{m.name}' needs {', '.join(missing)}")
    inputs = {k: (_as_mask(v) if k == "mask" else _as_input_tensor(v, k)) for k, v in images.items()
              if v is not None}
    inputs.update({k: _as_artifact_input(v, wanted[k].kind, k) for k, v in given.items() if v is not None})
    model = _clip_for(m, clip)
    raw = m.runner(settings=s, clip=model, callback=callback, cancel=cancel, progress=progress, **inputs)
    return result_of(raw)


def _as_artifact_input(value: Any, kind: str, name: str) -> Artifact:
    """An artifact input from an Artifact, its file, or an earlier Result holding exactly one of that kind."""
    if isinstance(value, Result):
        fits = [a for a in value.run.artifacts.values() if kind_fits(a.kind, kind)]
        if len(fits) != 1:
            raise ParameterError(f"{name}: the given result holds {len(fits)} artifacts of kind '{kind}' "
                                 f"({', '.join(value.run.artifacts) or 'none'}); pass the artifact itself")
        return fits[0]
    return as_artifact(value, kind)


def artifact_files(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """The artifacts a saved result PNG names: name -> (kind, path of the file beside it)."""
    path = Path(path)
    named = read_settings(path).get("artifacts", {})
    return {name: (info["kind"], str(path.parent / info["file"])) for name, info in named.items() if "file" in info}


def load_artifacts(path: str | os.PathLike) -> dict[str, Artifact]:
    """The artifacts a saved result PNG names, read from the files beside it and checked against its hashes."""
    named = read_settings(Path(path)).get("artifacts", {})
    out = {}
    for name, (kind, file) in artifact_files(path).items():
        a = Artifact.load(file, kind)
        if a.sha256() != named[name]["sha256"]:
            raise ParameterError(f"{file} was changed since {Path(path).name} was saved "
                                 "(its content hash differs from the one the PNG records)")
        out[name] = a
    return out


def result_of(raw: RunResult) -> Result:
    """A method's raw output as the API returns it: PIL images, and the record with the JSON-ready extras."""
    record = raw.record()
    if raw.extras:
        record["extras"] = {k: v for k, v in raw.extras.items() if _is_json(v)}
    pil = [tensor_to_pil(raw.images[i]) for i in range(raw.images.shape[0])]
    return Result(pil, record, raw)


def _is_json(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def generate(settings: Any = None, **kwargs: Any) -> Result:
    """Text to image (see ``clipkit.methods.image.generate``); e.g. ``generate(prompt="a red circle", seed=3)``."""
    return run("generate", settings, **kwargs)


def diffusion(settings: Any = None, **kwargs: Any) -> Result:
    """Text to image sampled from a latent diffusion model under CLIP guidance (see
    ``clipkit.methods.diffusion.clip_guided_diffusion``); e.g. ``diffusion(prompt="a red circle", batch=4, seed=1)``."""
    return run("diffusion", settings, **kwargs)


def enhance(image: Any, settings: Any = None, **kwargs: Any) -> Result:
    """Backlit enhancement of a PIL image / tensor / path at full size; e.g. ``enhance(img, strength=0.8)``."""
    return run("enhance", settings, image=image, **kwargs)
