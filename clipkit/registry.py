"""The types every surface shares (Method, Control, ImageInput) and the discovery of method families.

A family is a folder under ``clipkit/methods/`` (or any installed package) that declares its methods in an
``entries`` module: ``methods() -> list[Method]``, ``TITLE`` and ``ORDER``. Families are found through the
``clipkit.families`` entry-point group, so another installed package adds a family without touching this one. A
family that fails to import is left out and says why (no placeholder tab for a back-end that does not work); a
method whose weights are missing stays in, and ``Method.missing`` names the missing file.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from clipkit.guidance.errors import ClipKitError, ParameterError
from clipkit.guidance.runs import RunResult

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "clipkit.families"


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
    # The field names a file or folder on the machine that runs it (weights, a model folder). None: decided by the
    # field's name (``PATH_FIELDS``). The app accepts only shipped names or files in its weights folders there.
    path: bool | None = None


# Settings fields that name weights files or model folders, whichever family declares them.
PATH_FIELDS = ("checkpoint", "diffusion_model", "pretrained", "content_weights", "weights", "network", "generator",
               "stylegan", "encoder", "vgg_weights", "model_path", "clip_weights")
PATH_SUFFIXES = ("_checkpoint", "_weights", "_path", "_file", "_folder", "_model")


@dataclass(frozen=True)
class ImageInput:
    """An image argument of a method's run function; ``mask=True`` lets the user paint a region on it."""

    name: str
    label: str
    mask: bool = False


@dataclass(frozen=True)
class ArtifactInput:
    """A typed input of a method's run function (a trained network, a latent ...): ``kind`` is exact
    ("network/clipstyler-unet") or a family prefix ("latent/"); optional ones switch a mode on when given."""

    name: str
    label: str
    kind: str
    required: bool = False
    # False: no file box in the app. Results never carry it on disk (too big to save beside every result); the
    # method hands it back in memory (``RunResult.extras``), for a live slider to pass back in (``live_reuse``).
    upload: bool = True


# Every runner is called with keywords only: runner(settings=, clip=, callback=, cancel=, progress=, **images),
# where ``images`` are the method's ImageInputs by name (plus ``mask`` for a masked input) and its ArtifactInputs.
Runner = Callable[..., RunResult]


@dataclass(frozen=True)
class Method:
    """One back-end as every surface sees it."""

    name: str
    title: str
    description: str
    settings_cls: type
    runner: Runner
    inputs: tuple[ImageInput | ArtifactInput, ...] = ()
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
    # Settings that re-render the tab's last result as the slider moves, without Run (cheap apply-steps: an
    # edit's strength); ``live_reuse`` names the last result's artifacts (saved beside it, or handed back in memory
    # in its run's extras) passed back in, so nothing is re-learnt or recomputed.
    live: tuple[str, ...] = ()
    live_reuse: tuple[str, ...] = ()
    # The setting that sizes a batch whose image i draws only from seed + i (``guidance.runs.image_generators``):
    # a picked image is saved with that seed and this setting at 1, so its record re-runs it alone.
    batch_setting: str | None = None

    @property
    def image_inputs(self) -> tuple[ImageInput, ...]:
        return tuple(i for i in self.inputs if isinstance(i, ImageInput))

    @property
    def artifact_inputs(self) -> tuple[ArtifactInput, ...]:
        return tuple(i for i in self.inputs if isinstance(i, ArtifactInput))

    def field_names(self) -> list[str]:
        return [f.name for f in fields(self.settings_cls)]

    def path_fields(self) -> list[str]:
        """Settings fields naming a file or folder on the machine that runs the method (``Control.path``, else by
        name: ``PATH_FIELDS``, or a name ending in ``PATH_SUFFIXES``)."""
        out = []
        for name in self.field_names():
            flag = self.controls.get(name, Control()).path
            if flag or (flag is None and (name in PATH_FIELDS or name.endswith(PATH_SUFFIXES))):
                out.append(name)
        return out

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
    from clipkit.guidance.clip import resolve_weights

    try:
        resolve_weights(s.model, s.pretrained)
    except ClipKitError as e:
        return f"CLIP '{s.model}' is not available: {e}"
    return None


def check_with(resolve: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A ``Method.check`` from a resolver that raises ClipKitError naming the missing file."""

    def check(s: Any) -> str | None:
        try:
            resolve(s)
        except ClipKitError as e:
            return str(e)
        return None

    return check


@dataclass(frozen=True)
class Family:
    """A folder of methods: its tab title, order, its methods and its shipped presets folder."""

    name: str
    title: str
    order: int
    methods: tuple[Method, ...]
    folder: Path

    @property
    def presets_dir(self) -> Path:
        return self.folder / "presets"


_FAMILIES: dict[str, Family] = {}
_METHODS: dict[str, Method] = {}
_SKIPPED: dict[str, str] = {}
_LOCK = threading.RLock()
_LOADED = False


def _family_from_module(name: str, module_name: str) -> Family:
    module = importlib.import_module(module_name)
    return Family(name, getattr(module, "TITLE", name.title()), getattr(module, "ORDER", 100),
                  tuple(module.methods()), Path(module.__file__).resolve().parent)


def _load() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        found = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                found.append(_family_from_module(ep.name, ep.value))
            except Exception as e:  # a back-end that does not import gets no tab, and says why in the log
                _SKIPPED[ep.name] = f"{type(e).__name__}: {e}"
                log.warning("method family %s unavailable: %s", ep.name, e)
        if not found and not _SKIPPED:
            raise ClipKitError(f"no method families found in the '{ENTRY_POINT_GROUP}' entry points: install "
                               "clipkit (`pip install -e .`, done by setup.sh) so its families are registered")
        for fam in sorted(found, key=lambda f: (f.order, f.name)):
            _FAMILIES[fam.name] = fam
            for m in fam.methods:
                _METHODS.setdefault(m.name, m)
        _LOADED = True


def register(method: Method) -> Method:
    """Add (or replace) a method at run time (tests, notebooks); the app, API, presets and batch CLI pick it up."""
    _load()
    with _LOCK:
        _METHODS[method.name] = method
    return method


def families() -> dict[str, Family]:
    """Name -> Family for every family that imports, in tab order."""
    _load()
    return dict(_FAMILIES)


def methods() -> dict[str, Method]:
    """Name -> Method for every back-end that imports, in tab order."""
    _load()
    return dict(_METHODS)


def skipped() -> dict[str, str]:
    """Families left out because they failed to import, with the reason."""
    _load()
    return dict(_SKIPPED)


def get_method(name: str) -> Method:
    """The method called ``name``, or an error listing the ones that exist."""
    found = methods().get(name)
    if found is None:
        raise ParameterError(f"unknown method '{name}'; available methods: {', '.join(methods()) or 'none'}"
                             + "".join(f"; family {k} unavailable ({v})" for k, v in skipped().items()))
    return found
