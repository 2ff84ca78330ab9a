"""The Gradio app: one tab per registered method, built from the registry so a new back-end needs no UI code.

Each tab has the method's image inputs (with a brush for region masks), its settings as controls (the settings
dataclass fields; `clipkit.registry.Control` says how to show one), presets (load by name, from a preset file
or from any clipkit PNG; save the current controls), run / cancel, a live preview with per-loss values, and a
gallery of this session's results with their settings and a PNG download that embeds them.

Runs go through ``clipkit.api.run`` in a worker thread, so the handler can stream progress while the method
works; all tabs share one queue slot (``concurrency``) so two users cannot run two models out of memory at once.
Models load lazily on the first run and are shared by every session.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import secrets
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from clipkit import api
from clipkit.guidance import weights
from clipkit.guidance.artifacts import kind_fits
from clipkit.guidance.errors import ClipKitError, ParameterError
from clipkit.guidance.images import read_settings, tensor_to_pil
from clipkit.guidance.runs import RANDOM_SEED
from clipkit.guidance.threads import set_threads
from clipkit.presets import (
    Preset,
    PresetExistsError,
    list_presets,
    load_preset,
    make_preset,
    preset_from_record,
    presets_by_method,
    save_preset,
    settings_dict,
    settings_from_dict,
    user_preset_dir,
)
from clipkit.registry import Control, Method, methods
from clipkit.ui.live import LiveRenderer

if typing.TYPE_CHECKING:
    from clipkit.ui.starting import StartPage

log = logging.getLogger(__name__)
DEFAULT_OUTPUT_DIR = Path("outputs") / "app"  # beside where the app was started, like the CLI
WEIGHTS_DIR_ENV = "CLIPKIT_WEIGHTS_DIR"  # weights files the app's clients may name (with any --weights-dir)
UPDATE_EVERY_S = 0.2  # at most this often a status update goes to the browser (previews always go)
MODIFIED = " · *(modified)*"  # after a loaded preset's line once a control changes
NEEDS_WEIGHTS = " (needs weights)"  # after a preset's name in the list when its weights are missing here
HISTORY_LIMIT = 300  # saved results the History tab lists (newest first)
# A random seed (-1) is drawn by the app below this: the page's number boxes and JSON view are doubles, exact for
# integers up to 2**53 only, so a seed drawn from the API's whole 63-bit range would come back from the page as
# another seed and Load these settings would not reproduce the picture (a batch adds its image index).
BROWSER_SEEDS = 1 << 52
# Events whose handler may tell the user something (``told``) go through the queue: Gradio delivers a toast only
# there (a queue=False handler's gr.Warning is a server-side warning nobody sees). No concurrency limit, so they
# never wait behind a run, and no spinner over their outputs (they take milliseconds).
TELLS: dict[str, Any] = {"queue": True, "concurrency_limit": None, "show_progress": "hidden"}
# The before/after slider fits each whole picture in its box (Gradio 6.31 sizes its images to the box's width, so a
# square or tall picture showed only a band across its middle). On a phone the Run / Cancel row stays at the bottom
# of the screen while the controls scroll above it, and the painter's toolbar (zoom, undo) moves below its label,
# which wraps to two lines there instead of running under it.
CSS = """
.clipkit-compare .slider-wrap img { height: 100% !important; top: 0 !important; }
@media (max-width: 700px) {
  .clipkit-run-row { position: fixed; left: 0; right: 0; bottom: 0; z-index: 50; margin: 0 !important;
                     padding: 8px 16px; background: var(--body-background-fill);
                     box-shadow: 0 -4px 8px rgba(0, 0, 0, 0.12); }
  body { padding-bottom: 72px; }
  .clipkit-painter .image-container > .top-panel { top: 44px; }
}
"""
# Ctrl/Cmd+Enter runs the tab in view, Esc cancels its run (as in the tools artists know); small pictures are
# enlarged with sharp pixels
SHORTCUTS = """<script>
// the world models draw 32-64 px pictures: shown larger, they keep sharp pixels instead of a blur
document.addEventListener("load", (e) => {
  const img = e.target;
  if (img.tagName === "IMG" && img.naturalWidth && img.naturalWidth <= 128) img.style.imageRendering = "pixelated";
}, true);
document.addEventListener("keydown", (e) => {
  const shown = (sel) => [...document.querySelectorAll(sel)].find((b) => b.offsetParent !== null);
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    const run = shown("button[id$='-run']");
    if (run && !run.disabled) { e.preventDefault(); run.click(); }
  } else if (e.key === "Escape") {
    const cancel = shown("button[id$='-cancel']");
    if (cancel) { cancel.click(); }
  }
});
</script>"""


# ------------------------------------------------------------------------------------------ pure helpers
def _base_type(m: Method, name: str) -> Any:
    """A field's type with ``| None`` stripped (``int | None`` -> int)."""
    hint = typing.get_type_hints(m.settings_cls)[name]
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    return arms[0] if len(arms) == 1 and _optional(m, name) else hint


def _optional(m: Method, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(m.settings_cls)[name])


def field_kind(m: Method, name: str) -> str:
    """The widget a settings field gets: the registry's Control.kind, else one from its type."""
    ctl = m.controls.get(name, Control())
    if ctl.kind:
        return ctl.kind
    hint = _base_type(m, name)
    if hint is bool:
        return "checkbox"
    if hint in (int, float):
        return "number"
    return "text"


def _is_int(m: Method, name: str) -> bool:
    return _base_type(m, name) is int


def values_to_settings(m: Method, values: dict[str, Any]) -> Any:
    """Control values -> validated Settings (numbers from sliders become ints where the field is an int)."""
    clean: dict[str, Any] = {}
    for name, v in values.items():
        if (v is None or (isinstance(v, str) and v.strip() == "")) and _optional(m, name):
            v = None
        elif _is_int(m, name) and isinstance(v, float) and v.is_integer():
            v = int(v)
        clean[name] = v
    return settings_from_dict(m.name, clean, f"{m.title} settings")


def control_value(m: Method, name: str, value: Any) -> Any:
    """A setting as its control shows it (None shows as an empty text box)."""
    return "" if value is None and field_kind(m, name) in ("text", "textarea") else value


def settings_to_values(m: Method, settings: dict[str, Any]) -> list[Any]:
    """Settings dict -> control values, in the order of the settings fields."""
    return [control_value(m, n, settings[n]) for n in m.field_names()]


TINT_MIN_DIFF = 24  # a tinted pixel differs from the picture by >= 29 in some channel; PNG keeps it exact


def _tint_colours(rgb: np.ndarray) -> np.ndarray:
    """Magenta, or green where the pixel is near magenta already, so every tinted pixel visibly changes."""
    magenta, green = np.array([255, 0, 255]), np.array([0, 255, 0])
    near = np.linalg.norm(rgb.astype(np.float32) - magenta, axis=-1, keepdims=True) < 100
    return np.where(near, green, magenta)


def painted_mask(value: Any, picture: Image.Image) -> Image.Image | None:
    """The mask painter's value -> mask at the picture's size, white where painted or tinted; None when neither.

    Brush strokes come as layers. A recorded mask is shown as a tint of the painter's picture (Gradio 6.31's
    editor does not draw layers the server sets), so pixels where the painter's picture differs from the real
    one count as painted too. The picture itself always comes from its own plain image input, because the
    ImageEditor does not reliably hand its own upload to the server (measured in headless chromium)."""
    if not isinstance(value, dict):
        return None
    size = picture.size
    painted = np.zeros((size[1], size[0]), dtype=bool)
    for layer in value.get("layers") or []:
        if layer is not None:
            painted |= np.asarray(layer.convert("RGBA").resize(size, Image.NEAREST))[..., 3] > 0
    shown = value.get("background")
    if shown is not None and shown.size == size:
        diff = np.abs(np.asarray(shown.convert("RGB"), np.int16) - np.asarray(picture.convert("RGB"), np.int16))
        painted |= diff.max(-1) >= TINT_MIN_DIFF
    return Image.fromarray(painted.astype(np.uint8) * 255, "L") if painted.any() else None


def mask_painter_value(picture: Any, mask: Image.Image | None = None) -> dict[str, Any] | None:
    """What the mask painter shows: `picture` to paint on, tinted half-way to magenta where `mask` is white.

    A recorded mask comes back this way when a result is loaded, so the user sees it and Run repeats the edit
    (see `painted_mask`). None when there is no picture yet."""
    if picture is None:
        return None
    image = api.to_rgb(picture)
    if mask is not None:
        rgb = np.asarray(image)
        where = np.asarray(mask.convert("L").resize(image.size, Image.NEAREST))[..., None] > 127
        tinted = (rgb.astype(np.uint16) + _tint_colours(rgb)) // 2
        image = Image.fromarray(np.where(where, tinted, rgb).astype(np.uint8), "RGB")
    return {"background": image, "layers": [], "composite": None}


def told(message: str, duration: float | None = 10) -> str:
    """Tell the user once, as a toast, and return the line for the tab's status: an error never becomes an
    error state on every output control (what raising ``gr.Error`` from a many-output event shows)."""
    gr.Warning(message, duration=duration)
    return f"⚠️ {message}"


# what a step's values mean, in words for the status line (a key not here shows with spaces for underscores)
VALUE_WORDS = {"loss": "loss", "prompt": "prompt mismatch", "clip": "prompt mismatch", "directional": "direction "
               "mismatch", "patch": "patch mismatch", "tv": "roughness", "content": "content change", "identity":
               "identity change", "latent_l2": "distance from the start", "t": "noise level", "residual": "residual",
               "prompt_pair": "prompt pair", "pixel": "pixel error", "perceptual": "perceptual error",
               "noise_reg": "noise structure", "loss_d": "discriminator loss", "loss_g": "generator loss"}


def format_values(values: dict[str, float]) -> str:
    """Per-step values for the status line, named in words, 3 significant digits; NaN (a run without that loss,
    e.g. text-only diffusion) is left out."""
    return " · ".join(f"{VALUE_WORDS.get(k, k.replace('_', ' '))} {v:.3g}" for k, v in values.items()
                      if isinstance(v, (int, float)) and v == v)


def progress_line(step: int, total: int, elapsed: float) -> str:
    """"Step 12 of 50 · 24 % · about 9 s left": what a person watching a run wants to know."""
    pct = 100 * step / max(total, 1)
    left = elapsed / step * (total - step) if step else None
    eta = "" if left is None or step >= total else f" · about {left:.0f} s left" if left >= 1 else " · almost done"
    return f"**Step {step} of {total}** · {pct:.0f} %{eta}"


def batch_sheet(images: torch.Tensor) -> Image.Image:
    """A batch as one picture (a near-square grid, white gaps) for the preview: every sample at a glance."""
    from torchvision.utils import make_grid

    if images.ndim == 3 or images.shape[0] == 1:
        return tensor_to_pil(images)
    return tensor_to_pil(make_grid(images.float().cpu(), nrow=math.ceil(math.sqrt(images.shape[0])), padding=2,
                                   pad_value=1.0))


def draw_seed(settings: Any) -> Any:
    """``settings`` with a random seed (-1) drawn now, below ``BROWSER_SEEDS``; others unchanged."""
    if getattr(settings, "seed", None) != RANDOM_SEED:
        return settings
    return dataclasses.replace(settings, seed=secrets.randbelow(BROWSER_SEEDS))


def caption_for(record: dict[str, Any]) -> str:
    s = record["settings"]
    bits = [s["method"]]
    if "seed" in s:
        bits.append(f"seed {s['seed']}")
    n = record["steps_done"]
    if "steps" in s or n > 1:  # how far an iterative run went; one-pass methods (a sample, a stylizer) have no steps
        bits.append(f"{n} step{'' if n == 1 else 's'}")
    loss = record.get("final", {}).get("loss")
    if isinstance(loss, (int, float)) and loss == loss:  # NaN: no loss to show
        bits.append(f"loss {loss:.3f}")
    if record.get("cancelled"):
        bits.append("cancelled")
    return " · ".join(bits)


@dataclass
class Entry:
    """One result in a session's gallery."""

    path: str
    caption: str
    record: dict[str, Any]


def _is_name(text: str) -> bool:
    """A bare name (no folder part, not hidden, not a home or drive reference)."""
    return bool(text) and not any(c in text for c in "/\\:~") and not text.startswith(".")


def _plain(value: Any) -> Any:
    """A settings value as its JSON record has it (tuples as lists, 4.0 as 4), for comparing the two."""
    value = json.loads(json.dumps(value, default=str))
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ the app
class ClipKitApp:
    """Builds the Blocks and holds what sessions share: output folder, cancel tokens, test-model switch, and the
    folders whose weights files clients may name (``weights_dirs``, plus ``$CLIPKIT_WEIGHTS_DIR``)."""

    def __init__(self, test_models: bool = False, output_dir: Path | None = None, concurrency: int = 1,
                 weights_dirs: list[str | os.PathLike] | None = None) -> None:
        self.test_models = test_models
        self.output_dir = Path(output_dir or DEFAULT_OUTPUT_DIR)
        self.concurrency = concurrency
        env = os.environ.get(WEIGHTS_DIR_ENV)
        self.weights_dirs = [Path(d).expanduser().resolve() for d in [*(weights_dirs or []), *([env] if env else [])]]
        self._tokens: dict[str, api.CancelToken] = {}
        self._listed: dict[str, list[Preset]] = {}  # presets by method, read once per build
        self._lock = threading.Lock()
        self.live = LiveRenderer(clip="tiny" if test_models else None)

    # ---- the trust boundary: settings naming files on this server
    def offered_weights(self, m: Method, name: str) -> list[str]:
        """The names a client may give a path-like setting (``Method.path_fields``): the default, the control's
        choices, every shipped model, and for ``pretrained`` the published CLIP tags."""
        names = {str(getattr(m.defaults(), name) or "")}
        names.update(m.controls.get(name, Control()).choices or ())
        for kind in weights.KINDS:
            try:
                names.update(weights.shipped_names(kind))
                names.update(weights.shipped_names(kind, folders=True))
            except Exception:  # a provider that fails offers nothing
                continue
        if name == "pretrained":
            import open_clip

            names.update(tag for _, tag in open_clip.list_pretrained())
        names.discard("")
        return sorted(names)

    def trusted_settings(self, m: Method, settings: Any) -> Any:
        """``settings`` with every path-like field checked: a client may name only offered weights
        (``offered_weights``) or files inside the app's weights folders (given relative to one, or absolute inside
        one; passed on as absolute paths). Anything else is refused with one message that does not depend on
        whether such a file exists on the server."""
        changes: dict[str, Any] = {}
        for name in m.path_fields():
            value = getattr(settings, name, None)
            if value is None or (isinstance(value, str) and value.strip() == ""):
                continue
            text = str(value).strip()
            offered = self.offered_weights(m, name)
            if _is_name(text) and text in offered:
                continue
            found = self._in_weights_dirs(text)
            if found is not None:
                changes[name] = str(found)
                continue
            label = m.controls.get(name, Control()).label or name.replace("_", " ")
            folders = "the app's weights folder" if self.weights_dirs else "no weights folder (none configured)"
            raise ParameterError(
                f"{label}: this app does not offer that file; choose one of {', '.join(offered) or 'none'}, or a "
                f"file in {folders} given by its name there (server paths are not accepted)")
        return dataclasses.replace(settings, **changes) if changes else settings

    def _in_weights_dirs(self, text: str) -> Path | None:
        """``text`` as a path inside one of the weights folders (relative to it, or absolute and inside it), with
        links resolved so none leads out; None when it is not inside one."""
        if ".." in Path(text).parts:
            return None
        for folder in self.weights_dirs:
            candidate = Path(text) if Path(text).is_absolute() else folder / text
            resolved = Path(os.path.realpath(candidate))
            if _inside(resolved, folder) and resolved != folder:
                return resolved
        return None

    def result_path(self, stem: str) -> Path:
        """Where a result goes: its name ends in a random token, so no client can guess another's files."""
        return self.output_dir / f"{stem}-{secrets.token_urlsafe(12)}.png"

    def is_result(self, path: str | os.PathLike | None, suffix: str = ".png") -> bool:
        """Whether ``path`` (a value a client sent back) is a file of this app's results (a PNG, or with
        ``suffix=".safetensors"`` an artifact beside one) or an upload, in the output folder or where Gradio keeps
        uploads and served copies; never another file of the server."""
        if not path:
            return False
        from gradio.utils import get_upload_folder

        resolved = Path(os.path.realpath(path))
        folders = [Path(os.path.realpath(self.output_dir)), Path(os.path.realpath(get_upload_folder()))]
        return resolved.suffix.lower() == suffix and resolved.is_file() and any(_inside(resolved, f) for f in folders)

    def artifact_files(self, m: Method, given: dict[str, str | None], strict: bool = True) -> dict[str, str]:
        """The artifact inputs a client gave (result or uploaded ``.safetensors`` files), checked; a required one
        missing is an error with what to do (``strict``), else left out."""
        out = {}
        for inp in m.artifact_inputs:
            path = given.get(inp.name)
            if not path:
                if inp.required and strict:
                    raise ParameterError(f"{inp.label}: none given. Send a result that carries one here (\"Send "
                                         "the selected result to\"), or upload its .safetensors file")
                continue
            if not self.is_result(path, ".safetensors"):
                raise ParameterError(f"{inp.label}: only this app's results and uploaded .safetensors files "
                                     "are accepted")
            out[inp.name] = str(path)
        return out

    # ---- cancellation: one token per (browser session, method), armed on click so a queued run can be
    # cancelled too (the run then stops before its first step)
    def arm(self, key: str) -> str:
        with self._lock:
            self._tokens[key] = api.CancelToken()
        return "Queued…"

    def cancel(self, key: str) -> bool:
        """Stop the run under ``key`` after its current step; the run's own status then says "Cancelled".

        (Gradio's ``cancels=`` is not used: it would kill the event and lose the partial result.)"""
        with self._lock:
            token = self._tokens.get(key)
        if token is None:
            return False
        token.cancel()
        return True

    @staticmethod
    def key(request: gr.Request | None, m: Method) -> str:
        return f"{getattr(request, 'session_hash', None) or 'local'}:{m.name}"

    # ---- running
    def run_stream(self, m: Method, settings: Any, images: dict[str, Any], key: str | None = None,
                   progress: Any = None) -> Iterator[tuple[str, Any]]:
        """Run ``m`` in a worker thread; yields ("status", markdown), ("preview", PIL) and finally
        ("result", api.Result). Closing the generator early cancels the run. Path-like settings pass the app's
        trust boundary first (``trusted_settings``)."""
        key = key or self.key(None, m)
        settings = self.trusted_settings(m, settings)
        with self._lock:
            token = self._tokens.setdefault(key, api.CancelToken())
        if token.cancelled:  # cancel was pressed while the run waited in the queue
            with self._lock:
                self._tokens.pop(key, None)
            yield "status", "Cancelled before it started."
            return
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                result = api.run(m.name, settings, clip="tiny" if self.test_models else None,
                                 callback=lambda info: events.put(("step", info)), cancel=token, **images)
                events.put(("done", result))
            except BaseException as e:  # handed to the UI thread, which shows it
                events.put(("error", e))

        worker = threading.Thread(target=work, name=f"clipkit-{m.name}", daemon=True)
        started = time.perf_counter()
        worker.start()
        last_status = 0.0
        try:
            while True:
                kind, payload = events.get()
                if kind == "step":
                    info = payload
                    if info.preview is not None:
                        yield "preview", batch_sheet(info.preview)
                    now = time.perf_counter()
                    if now - last_status >= UPDATE_EVERY_S or info.step == info.total:
                        last_status = now  # progress and status at most every UPDATE_EVERY_S: a busy page lags
                        if progress is not None:
                            progress((info.step, info.total), desc=f"{m.title}: step {info.step}/{info.total}")
                        yield "status", (f"{progress_line(info.step, info.total, now - started)} — "
                                         f"{format_values(info.values)}")
                elif kind == "error":
                    raise payload
                else:
                    yield "result", payload
                    return
        finally:
            if worker.is_alive():
                token.cancel()  # the browser went away or Gradio stopped the event: stop the worker too
            with self._lock:
                if self._tokens.get(key) is token:
                    del self._tokens[key]

    def save_results(self, m: Method, result: api.Result) -> list[Entry]:
        """Write each image of the result as a PNG with its settings where the app serves downloads from: a batch
        of per-image seeds records each image's own seed, so it re-runs alone (``Result.record_for``); any other
        batch's file reproduces the whole batch."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        seed = result.settings.get("seed")
        base = f"{m.name}-{stamp}" + (f"-s{seed}" if seed is not None else "")
        count, entries = len(result.images), []
        for i in range(count):
            name = base if count == 1 else f"{base}-{i + 1}of{count}"
            path = self.result_path(name)
            while path.exists():
                path = self.result_path(name)
            result.save(path, index=i)
            record = result.record_for(i)
            caption = caption_for(record) + (f" · image {i + 1} of {count}" if count > 1 else "")
            entries.append(Entry(str(path), caption, record))
        return entries

    # ---- before / after and live sliders
    def before_after(self, m: Method, settings: Any, inputs: dict[str, Any], result: api.Result,
                     path: str, kept: dict[str, Any] | None = None) -> tuple[Image.Image, Image.Image]:
        """The comparison a finished run shows: the input picture against the first result (image-to-image
        methods), or for live edits the unedited start against the edit (every image), drawn from what the
        run handed back (``kept``: ``LiveRenderer.keep``) where the method reuses something."""
        if m.live:
            settings = self.trusted_settings(m, settings)
            before = self.live.before(m, settings, inputs, path, kept)
            return batch_sheet(before), batch_sheet(result.tensors)
        after = result.images[0]
        picture = inputs[m.image_inputs[0].name]
        return picture.convert("RGB").resize(after.size, Image.Resampling.LANCZOS), after

    def live_update(self, m: Method, settings: Any, given: dict[str, str], last: Entry | None,
                    kept: dict[str, Any] | None = None) -> tuple[Any, str]:
        """A live slider moved: redraw the tab's last result at the new strength (``LiveRenderer``), provided
        nothing else changed since that run (else the picture would not be the result's). ``kept``: the session's
        ``{"path", "artifacts"}`` of its last run (``LiveRenderer.keep``), used when it is ``last``'s."""
        if last is None:
            return gr.update(), "Run once first: then this slider redraws the result as it moves."
        recorded = last.record.get("settings", {})
        settings = self.trusted_settings(m, settings)  # as the run recorded them (a weights file by its full path)
        if getattr(settings, "seed", None) == RANDOM_SEED and "seed" in recorded:  # -1: the seed that run drew
            settings = dataclasses.replace(settings, seed=recorded["seed"])
        now = settings_dict(settings)
        changed = [self._label(m, n) for n in m.field_names()
                   if n not in m.live and n in recorded and _plain(recorded[n]) != _plain(now[n])]
        if changed:
            return gr.update(), (f"Changed since the last run: {', '.join(changed)}. Press **Run**; the slider "
                                 "then redraws that result live.")
        reuse = kept["artifacts"] if kept and kept.get("path") == last.path else None
        t0 = time.perf_counter()
        after = self.live.render(m, settings, given, last.path, reuse).tensors
        before = self.live.before(m, settings, given, last.path, reuse)
        ms = (time.perf_counter() - t0) * 1000
        moved = ", ".join(f"{self._label(m, n)} {now[n]}" for n in m.live)
        return (batch_sheet(before), batch_sheet(after)), (f"Live: {moved} ({ms:.0f} ms). Press **Run** to keep "
                                                           "it as a result.")

    # ---- history: what this app saved, across reloads and restarts
    def saved_results(self, limit: int = HISTORY_LIMIT) -> list[Entry]:
        """The result PNGs in the output folder, newest first, with their records (unreadable files skipped)."""
        if not self.output_dir.is_dir():
            return []
        files = sorted(self.output_dir.glob("*.png"), key=lambda f: f.stat().st_mtime, reverse=True)[:limit]
        entries = []
        for f in files:
            try:
                record = read_settings(f)
            except (ClipKitError, OSError, ValueError):
                continue
            if isinstance(record.get("settings"), dict) and "steps_done" in record:
                entries.append(Entry(str(f), caption_for(record), record))
        return entries

    def _build_history(self) -> dict[str, Any]:
        gr.Markdown("Every result this app saved in its output folder, newest first (they stay after a reload or "
                    "a restart). Select one to see its settings, download it, open its settings in its tab to run "
                    "it again, or send it on.")
        refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh")
        entries = gr.State([])
        gallery = gr.Gallery(label="Saved results", columns=6, height="auto", format="png",
                             elem_id="history-gallery")
        record_json = gr.JSON(label="Settings, losses and timings", max_height=320, elem_id="history-record")
        with gr.Row():
            download = gr.DownloadButton("Download PNG (settings embedded)", value=None,
                                         elem_id="history-download")
            open_btn = gr.Button("Open its settings in its tab", elem_id="history-open")
        with gr.Row():
            send_to = gr.Dropdown([], value=None, label="Send the selected result to", scale=3,
                                  elem_id="history-send-to")
            send_btn = gr.Button("Send", scale=1, size="sm", elem_id="history-send")

        def on_refresh() -> tuple[Any, list[Entry]]:
            found = self.saved_results()
            return gr.update(value=[(e.path, e.caption) for e in found]), found

        def on_select(found: list[Entry], evt: gr.SelectData) -> tuple[Any, Any]:
            if evt.index is None or evt.index >= len(found):
                return gr.update(), gr.update()
            return found[evt.index].record, found[evt.index].path

        outputs = [gallery, entries]
        refresh.click(on_refresh, None, outputs, queue=False)
        gallery.select(on_select, entries, [record_json, download], queue=False)
        return {"image": None, "files": {}, "download": download, "send_to": send_to, "send_btn": send_btn,
                "record": record_json, "open_btn": open_btn, "refresh": on_refresh, "outputs": outputs}

    def _wire_open(self, history: dict[str, Any], handles: dict[str, dict[str, Any]],
                   places: dict[str, tuple[str, Any]], outer: Any) -> None:
        """"Open its settings in its tab": the selected result's method tab opens with its settings loaded."""
        inners = list(dict.fromkeys(inner for _, inner in places.values() if inner is not None))
        loaded = [c for h in handles.values() for c in h["loaded"]]

        def open_entry(record: dict[str, Any] | None, path: str | None) -> list[Any]:
            keep = [gr.update() for _ in [outer, *inners, *loaded]]
            if not record or not self.is_result(path):
                told("Select a result first, then open it.")
                return keep
            target = record.get("settings", {}).get("method")
            if target not in handles:
                told(f"This result was made by '{target}', which this app does not have.")
                return keep
            tab, inner = places[target]
            values = [v for name, h in handles.items()
                      for v in (h["open"](record) if name == target else [gr.update() for _ in h["loaded"]])]
            return [gr.Tabs(selected=tab), *[gr.Tabs(selected=target) if i is inner else gr.update()
                                             for i in inners], *values]

        history["open_btn"].click(open_entry, [history["record"], history["download"]], [outer, *inners, *loaded],
                                  **TELLS)

    @staticmethod
    def _label(m: Method, name: str) -> str:
        return m.controls.get(name, Control()).label or name.replace("_", " ")

    # ---- building
    def build(self) -> gr.Blocks:
        self._listed = presets_by_method()  # every tab's presets from one read of the preset files
        with gr.Blocks(title="clipkit") as demo:
            # the queue is set up first, while the page is empty: Gradio rebuilds its server app (and the whole
            # page's config, ~0.3 s for these tabs) on every queue() call; the limits apply when events run
            demo.queue(default_concurrency_limit=self.concurrency, max_size=64)
            gr.Markdown("# clipkit\nCLIP-guided image generation and editing. Pick a tab, load a preset or set "
                        "the controls, press **Run**. Results keep their settings: download the PNG, or load it "
                        "back as a preset to reproduce it.")
            if self.test_models:
                gr.Markdown("**Test mode:** CLIP-guided methods use the tiny random test CLIP (no weights needed; "
                            "results are not meaningful).", elem_id="test-mode-banner")
            families: dict[str, list[Method]] = {}
            for m in methods().values():
                families.setdefault(m.family or m.title, []).append(m)
            # where each method's tab sits: (outer tab id, inner Tabs of its family or None)
            places: dict[str, tuple[str, gr.Tabs | None]] = {}
            handles: dict[str, dict[str, Any]] = {}
            # tabs that do not fit the width wrap onto another row (a phone shows every tab, none behind a "…" menu)
            with gr.Tabs(overflow_behavior="wrap") as outer:
                for family, members in families.items():
                    if len(members) == 1:
                        with gr.Tab(members[0].title, id=members[0].name, elem_id=f"tab-{members[0].name}"):
                            handles[members[0].name] = self._build_tab(members[0])
                        places[members[0].name] = (members[0].name, None)
                        continue
                    with gr.Tab(family, id=family, elem_id=f"family-{family.lower().replace(' ', '-')}"), \
                            gr.Tabs(overflow_behavior="wrap") as inner:
                        for m in members:
                            with gr.Tab(m.title, id=m.name, elem_id=f"tab-{m.name}"):
                                handles[m.name] = self._build_tab(m)
                            places[m.name] = (family, inner)
                with gr.Tab("History", id="history", elem_id="tab-history") as history_tab:
                    history = self._build_history()
            history_tab.select(history["refresh"], None, history["outputs"], queue=False)
            self._wire_open(history, handles, places, outer)
            self._wire_send_to({**handles, "history": history}, places, outer)
        return demo

    def _build_tab(self, m: Method) -> dict[str, Any]:
        gr.Markdown(m.description)
        notice = m.missing(test_models=self.test_models)
        if notice:
            gr.Markdown(f"⚠️ **Weights missing — runs will fail until they are in place.** {notice}",
                        elem_id=f"{m.name}-missing")
        defaults = settings_dict(m.defaults())
        history = gr.State([])
        # what a live slider takes back from this session's last run (``LiveRenderer.keep``): per session, in memory
        kept = gr.State(None) if m.live_reuse else None
        with gr.Row():
            with gr.Column(scale=1):
                inputs: dict[str, gr.components.Component] = {}
                painters: dict[str, gr.ImageEditor] = {}
                for inp in m.image_inputs:
                    inputs[inp.name] = gr.Image(label=inp.label, type="pil", format="png",
                                                sources=["upload", "clipboard"], elem_id=f"{m.name}-{inp.name}")
                    if inp.mask:  # painted on a copy the server puts there; see painted_mask for why
                        # RGBA: with image_mode="RGB" Gradio hands the brush layer over without its alpha
                        painters[inp.name] = gr.ImageEditor(
                            label="Region to change: paint over it (unpainted = the whole picture)", type="pil",
                            format="png", image_mode="RGBA", layers=False, sources=(), transforms=(),
                            brush=gr.Brush(colors=["rgba(255, 0, 255, 0.45)"], color_mode="fixed"),  # see under
                            elem_id=f"{m.name}-{inp.name}-mask", elem_classes=["clipkit-painter"])
                        inputs[inp.name].change(mask_painter_value, inputs[inp.name], painters[inp.name],
                                                queue=False)
                files: dict[str, gr.File] = {}
                for art in (a for a in m.artifact_inputs if a.upload):
                    files[art.name] = gr.File(label=art.label + ("" if art.required else " (optional)"),
                                              file_types=[".safetensors"], type="filepath",
                                              elem_id=f"{m.name}-{art.name}")
                presets = self._preset_names(m, self._listed)  # marks for missing weights come on focus (they
                # need the CLIP registry, which the first page does not load)
                with gr.Row():
                    preset_dd = gr.Dropdown(presets, value=None, label="Preset", scale=3,
                                            elem_id=f"{m.name}-preset")
                    upload = gr.UploadButton("Load preset / PNG", file_types=[".json", ".png"], scale=1,
                                             size="sm", elem_id=f"{m.name}-preset-upload")
                preset_info = gr.Markdown(elem_id=f"{m.name}-preset-info")
                with gr.Row(elem_classes=["clipkit-run-row"]):  # above the controls: in view without scrolling
                    run_btn = gr.Button("Run", variant="primary", elem_id=f"{m.name}-run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id=f"{m.name}-cancel")
                controls: dict[str, gr.components.Component] = {}
                main = [f.name for f in fields(m.settings_cls) if not m.controls.get(f.name, Control(advanced=True))
                        .advanced]
                for name in main:
                    controls[name] = self._control(m, name, defaults[name])
                with gr.Accordion("Advanced", open=False):
                    for name in m.field_names():
                        if name not in controls:
                            controls[name] = self._control(m, name, defaults[name])
                controls = {n: controls[n] for n in m.field_names()}  # field order, for value lists
                with gr.Accordion("Save as preset", open=False):
                    save_name = gr.Textbox(label="Preset name", placeholder="my-look", elem_id=f"{m.name}-save-name")
                    save_desc = gr.Textbox(label="Description", placeholder="what it does, for whom")
                    save_over = gr.Checkbox(False, label="Replace an existing preset of this name",
                                            elem_id=f"{m.name}-save-overwrite")
                    save_btn = gr.Button("Save preset", elem_id=f"{m.name}-save")
                    preset_file = gr.File(label="Preset file", interactive=False, elem_id=f"{m.name}-preset-file")
            with gr.Column(scale=1):
                preview = gr.Image(label="Preview", type="pil", interactive=False, format="png", height=256,
                                   elem_id=f"{m.name}-preview")
                status = gr.Markdown(elem_id=f"{m.name}-status")
                compare = None
                if m.image_inputs or m.live:  # before / after at one size
                    label = "Before / after" + (f" — moves with {', '.join(self._label(m, n) for n in m.live)}"
                                                if m.live else "")
                    compare = gr.ImageSlider(label=label, type="pil", interactive=False, height=256,
                                             elem_id=f"{m.name}-compare", elem_classes=["clipkit-compare"])
                gallery = gr.Gallery(label="Results (this session)", columns=3, height="auto", format="png",
                                     elem_id=f"{m.name}-gallery")
                record_json = gr.JSON(label="Settings, losses and timings of the selected result",
                                      max_height=320, elem_id=f"{m.name}-record")
                with gr.Row():
                    download = gr.DownloadButton("Download PNG (settings embedded)", value=None,
                                                 elem_id=f"{m.name}-download")
                    reuse_btn = gr.Button("Load these settings", elem_id=f"{m.name}-reuse")
                with gr.Row():
                    send_to = gr.Dropdown([], value=None, label="Send the selected result to", scale=3,
                                          elem_id=f"{m.name}-send-to")
                    send_btn = gr.Button("Send", scale=1, size="sm", elem_id=f"{m.name}-send")

        control_list = list(controls.values())

        masked = next((i.name for i in m.image_inputs if i.mask), None)
        editor = painters[masked] if masked else None
        picture = inputs[masked] if masked else None
        # A loaded mask goes to the painter in steps: the browser first clears the painter's canvas (set straight
        # over the user's strokes, Gradio 6.31's editor stays on its loading spinner; measured in the browser
        # test), then the server shows the mask. Without a mask to show, the painter is left alone.
        pending = gr.State(None) if editor is not None else None
        loaded = [*control_list, preset_info, *([pending] if editor is not None else [])]

        def apply(p: Preset, mask: Image.Image | None = None, picture_value: Any = None) -> list[Any]:
            if p.method != m.name and p.method not in m.borrows:
                raise ParameterError(f"'{p.name}' is a preset for method '{p.method}'; open the "
                                     f"{methods()[p.method].title if p.method in methods() else p.method} tab to "
                                     "use it")
            values = api.preset_values(m, p)
            desc = f" — {p.description}" if p.description else ""
            if p.method != m.name:  # borrowed: only the shared settings change, the rest stay as they are
                desc += f" (its {', '.join(values)} from {p.method})"
                shown = [control_value(m, n, values[n]) if n in values else gr.update() for n in m.field_names()]
            else:
                shown = settings_to_values(m, values)
            missing = self._preset_missing(m, p)
            if missing:
                desc += f". ⚠️ Needs weights this machine lacks: {missing}"
            if editor is None:
                return [*shown, f"Loaded preset **{p.name}**{desc}"]
            painted = mask_painter_value(picture_value, mask) if mask is not None else None
            if mask is not None:
                desc += (" and its mask" if painted is not None else
                         ". It was made with a painted mask: open its input picture, then load it again to "
                         "get the mask back")
            return [*shown, f"Loaded preset **{p.name}**{desc}", painted]

        def unchanged(message: str = "") -> list[Any]:
            return [gr.update() for _ in control_list] + [message] + ([None] if editor is not None else [])

        def on_preset(name: str | None) -> list[Any]:
            if not name:
                return unchanged()
            if name not in self._preset_names(m):  # a name from the list, never a path on the server
                return unchanged(told(f"no preset named {name!r} for {m.title}"))
            try:
                return apply(load_preset(name))
            except ClipKitError as e:
                return unchanged(told(str(e)))

        def on_upload(data: dict) -> list[Any]:
            file = data[upload]
            if not file:
                return unchanged()
            try:
                mask = api.recorded_mask(file) if Path(file).suffix.lower() == ".png" else None
                return apply(load_preset(Path(file)), mask, data.get(picture))
            except ClipKitError as e:
                return unchanged(told(str(e)))

        def on_reuse(data: dict) -> list[Any]:
            record = data[record_json]
            if not record:
                return unchanged(told("Select a result in the gallery first, then load its settings."))
            try:
                return apply(preset_from_record(record, name="from-result", source="the selected result"),
                             api.recorded_mask(record), data.get(picture))
            except ClipKitError as e:
                return unchanged(told(str(e)))

        def on_save(data: dict) -> tuple[Any, Any, str]:
            name = (data[save_name] or "").strip()
            replace = bool(data.get(save_over))
            try:
                s = values_to_settings(m, {n: data[c] for n, c in controls.items()})
                existed = name in [p.name for p in list_presets()]
                path = save_preset(make_preset(m.name, s, name, (data[save_desc] or "").strip()), overwrite=replace)
            except PresetExistsError:
                return gr.update(), gr.update(), told(f"A preset named '{name}' already exists. Choose another "
                                                      "name, or tick \"Replace an existing preset of this name\".")
            except ClipKitError as e:
                return gr.update(), gr.update(), told(str(e))
            choices = self._preset_choices(m)
            verb = "Replaced" if replace and existed else "Saved"
            return (str(path), gr.update(choices=choices, value=name), f"{verb} preset **{name}**")

        def on_run(data: dict, request: gr.Request, progress=gr.Progress()) -> Iterator[dict]:  # noqa: B008 (Gradio injects it)
            try:
                settings = draw_seed(values_to_settings(m, {n: data[c] for n, c in controls.items()}))
                images: dict[str, Any] = self.artifact_files(m, {n: data[f] for n, f in files.items()})
            except ClipKitError as e:
                yield {status: told(str(e))}
                return
            for inp in m.image_inputs:
                value = data[inputs[inp.name]]
                if value is None:
                    yield {status: told(f"upload an image first ({inp.label})")}
                    return
                images[inp.name] = api.to_rgb(value)
                if inp.mask:
                    mask = painted_mask(data[painters[inp.name]], images[inp.name])
                    if mask is not None:
                        images["mask"] = mask
            try:
                for kind, payload in self.run_stream(m, settings, images, self.key(request, m), progress):
                    if kind == "preview":
                        yield {preview: payload}
                    elif kind == "status":
                        yield {status: payload}
                    else:
                        new = self.save_results(m, payload)
                        entry, entries = new[0], [*new, *data[history]]
                        done = "Cancelled — partial result kept." if payload.record["cancelled"] else "Done."
                        t = sum(payload.record["timings"].values())
                        reuse = {"path": entry.path, "artifacts": self.live.keep(m, payload)}
                        if compare is not None:
                            yield {compare: self.before_after(m, settings, images, payload, entry.path,
                                                              reuse["artifacts"])}
                        yield {
                            preview: batch_sheet(payload.tensors),
                            status: (f"**{done}** {entry.caption} · {t:.1f} s <details><summary>file</summary>"
                                     f"<code>{Path(entry.path).name}</code></details>"),
                            gallery: gr.update(value=[(e.path, e.caption) for e in entries], selected_index=0),
                            record_json: entry.record,
                            download: entry.path,
                            history: entries,
                            **({kept: reuse} if kept is not None else {}),
                        }
            except ClipKitError as e:
                yield {status: told(str(e), duration=None)}
            except Exception as e:
                log.exception("run of %s failed", m.name)
                yield {status: told(f"The run failed: {type(e).__name__}: {e}", duration=None)}

        def on_select(entries: list[Entry], evt: gr.SelectData) -> tuple[Any, Any]:
            if evt.index is None or evt.index >= len(entries):
                return gr.update(), gr.update()
            e = entries[evt.index]
            return e.record, e.path

        with_picture = {picture} if picture is not None else set()
        preset_dd.focus(lambda: gr.update(choices=self._preset_choices(m)), None, preset_dd, queue=False)

        def on_modified(info: str) -> Any:  # the list keeps the name; the line says the controls moved on
            if info and info.startswith("Loaded preset") and MODIFIED not in info:
                return info + MODIFIED
            return gr.update()

        gr.on([c.input for c in control_list], on_modified, preset_info, preset_info, queue=False)
        preset_dd.input(on_preset, preset_dd, loaded, **TELLS)
        loads = [upload.upload(on_upload, {upload, *with_picture}, loaded, **TELLS),
                 reuse_btn.click(on_reuse, {record_json, *with_picture}, loaded, **TELLS)]
        if editor is not None:
            # the clear must have drawn before the new value arrives, or it can wipe that value (one clean-clone CI
            # run showed no restored mask): wait two frames and a moment after the click
            clear_js = (f"async (v) => {{ if (v) {{ document.querySelector("
                        f"'#{editor.elem_id} button[aria-label=\"Clear canvas\"]')?.click(); "
                        "await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); "
                        "await new Promise(r => setTimeout(r, 100)); } return v; }")
            for event in loads:
                event.then(None, pending, pending, js=clear_js, queue=False).then(
                    lambda value: gr.update() if value is None else value, pending, editor, queue=False)
        save_btn.click(on_save, {save_name, save_desc, save_over, *control_list}, [preset_file, preset_dd, preset_info],
                       **TELLS)
        run_inputs = {*control_list, *inputs.values(), *painters.values(), *files.values(), history}
        def on_arm(request: gr.Request) -> tuple[str, Any]:
            return self.arm(self.key(request, m)), gr.update(interactive=False)  # one run per tab at a time

        def on_cancel(request: gr.Request) -> None:
            self.cancel(self.key(request, m))

        run_btn.click(on_arm, None, [status, run_btn], queue=False).then(
            on_run, run_inputs, [preview, status, gallery, record_json, download, history,
                                 *(c for c in (compare, kept) if c is not None)],
            concurrency_limit=self.concurrency, concurrency_id="clipkit-runs", api_name=f"run_{m.name}",
            show_progress="hidden").then(  # progress is the status line's: nothing drawn over the pictures
            lambda: gr.update(interactive=True), None, run_btn, queue=False)  # after success, error or cancel
        cancel_btn.click(on_cancel, None, None, queue=False)
        gallery.select(on_select, history, [record_json, download], queue=False)
        if m.live and compare is not None:
            def on_live(data: dict) -> tuple[Any, str]:
                entries = data[history]
                try:
                    settings = values_to_settings(m, {n: data[c] for n, c in controls.items()})
                    given: dict[str, Any] = self.artifact_files(m, {n: data[f] for n, f in files.items()},
                                                                strict=False)
                    for inp in m.image_inputs:  # the same picture as the run (a mask is not live)
                        if data[inputs[inp.name]] is None:
                            return gr.update(), told(f"upload an image first ({inp.label})")
                        given[inp.name] = api.to_rgb(data[inputs[inp.name]])
                    return self.live_update(m, settings, given, entries[0] if entries else None,
                                            data[kept] if kept is not None else None)
                except ClipKitError as e:
                    return gr.update(), told(str(e))

            for name in m.live:
                controls[name].release(on_live, {*control_list, *files.values(), *inputs.values(), history,
                                                 *([kept] if kept is not None else [])}, [compare, status],
                                       trigger_mode="always_last", **TELLS)
        def open_record(record: dict[str, Any]) -> list[Any]:  # the History tab opens a result here
            try:
                return apply(preset_from_record(record, name="from-history", source="the history entry"))
            except ClipKitError as e:
                return unchanged(told(str(e)))

        first = m.image_inputs[0].name if m.image_inputs else None
        return {"image": inputs.get(first) if first else None, "download": download, "send_to": send_to,
                "send_btn": send_btn, "files": files, "loaded": loaded, "open": open_record}

    def _wire_send_to(self, handles: dict[str, dict[str, Any]], places: dict[str, tuple[str, Any]],
                      outer: Any) -> None:
        """"Send to" on every tab: the selected result becomes the chosen method's input (its picture, and the
        artifacts it carries that the method takes: a latent, a direction, a trained network), and that
        method's tab opens (the way artists pass a picture on in the tools they know)."""
        takes = {name: h for name, h in handles.items() if h["image"] is not None or h["files"]}
        titles = {f"{methods()[n].title} ({n})": n for n in takes}
        inners = list(dict.fromkeys(inner for _, inner in places.values() if inner is not None))
        pictures = {n: h["image"] for n, h in takes.items() if h["image"] is not None}
        files = [(n, art, comp) for n, h in takes.items() for art, comp in h["files"].items()]
        outputs = [outer, *inners, *pictures.values(), *[comp for _, _, comp in files]]

        for name, h in handles.items():
            # a tab that paints a mask may take its own result back, to paint on it and refine it
            h["send_to"].choices = [(t, t) for t, n in titles.items()
                                    if n != name or any(i.mask for i in methods()[n].image_inputs)]

            def send(choice: str | None, path: str | None) -> list[Any]:
                nothing = [gr.update() for _ in outputs]
                if not self.is_result(path):  # the client sends the path back: only this app's results pass
                    told("Select a result in the gallery first, then send it.")
                    return nothing
                if choice not in titles:
                    told("Choose where to send the result.")
                    return nothing
                target = titles[choice]
                tab, inner = places[target]
                carried = api.artifact_files(path)  # name -> (kind, file)
                wanted = {i.name: i.kind for i in methods()[target].artifact_inputs}
                found = {art: next((f for kind, f in carried.values() if kind_fits(kind, wanted[art])), None)
                         for art in wanted}
                if target not in pictures and not any(found.values()):
                    told(f"This result carries nothing {methods()[target].title} takes ({', '.join(wanted.values())}).")
                    return nothing
                picture = None
                if target in pictures:
                    picture = Image.open(path)
                    picture.load()
                return [gr.Tabs(selected=tab), *[gr.Tabs(selected=target) if i is inner else gr.update()
                                                 for i in inners],
                        *[picture if n == target else gr.update() for n in pictures],
                        *[(found[art] if n == target and found[art] else gr.update()) for n, art, _ in files]]

            h["send_btn"].click(send, [h["send_to"], h["download"]], outputs, **TELLS)

    def _preset_choices(self, m: Method, listed: dict[str, list[Preset]] | None = None) -> list[tuple[str, str]]:
        """The tab's presets as (label, name): a preset whose weights this machine lacks says so in its label
        (artist presets name a real CLIP; with only the world CLIPs they cannot look as described)."""
        listed = presets_by_method() if listed is None else listed
        out = []
        for p in (p for src in (m.name, *m.borrows) for p in listed.get(src, [])):
            out.append((p.name + (NEEDS_WEIGHTS if self._preset_missing(m, p) else ""), p.name))
        return out

    def _preset_missing(self, m: Method, p: Preset) -> str | None:
        """What weights ``p`` needs that are not here (None: all there, or the app's test models stand in)."""
        if self.test_models:
            return None
        try:
            return m.missing(values_to_settings(m, {**settings_dict(m.defaults()), **api.preset_values(m, p)}))
        except ClipKitError as e:
            return str(e)

    @staticmethod
    def _preset_names(m: Method, listed: dict[str, list[Preset]] | None = None) -> list[str]:
        """The presets a tab offers, read now, or from ``listed`` (``presets_by_method``, read once per build)."""
        listed = presets_by_method() if listed is None else listed
        return [p.name for src in (m.name, *m.borrows) for p in listed.get(src, [])]

    @staticmethod
    def _control(m: Method, name: str, value: Any) -> gr.components.Component:
        ctl = m.controls.get(name, Control())
        label = ctl.label or name.replace("_", " ")
        kind = field_kind(m, name)
        elem_id = f"{m.name}-{name}"
        if kind == "textarea":
            return gr.Textbox(value=value or "", label=label, info=ctl.info, lines=2, elem_id=elem_id)
        if kind == "slider":
            return gr.Slider(ctl.minimum or 0, ctl.maximum or 100, value=value, step=ctl.step, label=label,
                             info=ctl.info, elem_id=elem_id)
        if kind == "number":
            return gr.Number(value=value, label=label, info=ctl.info, precision=0 if _is_int(m, name) else None,
                             elem_id=elem_id)
        if kind == "dropdown":
            return gr.Dropdown(list(ctl.choices or ()), value=value, label=label, info=ctl.info,
                               allow_custom_value=True, elem_id=elem_id)
        if kind == "checkbox":
            return gr.Checkbox(value=bool(value), label=label, info=ctl.info, elem_id=elem_id)
        return gr.Textbox(value="" if value is None else str(value), label=label, info=ctl.info, elem_id=elem_id)


def build_app(test_models: bool = False, output_dir: Path | None = None, concurrency: int = 1,
              weights_dirs: list[str | os.PathLike] | None = None) -> gr.Blocks:
    """The Blocks, queue configured; ``test_models`` swaps the tiny test CLIP in for CLIP-guided methods."""
    return ClipKitApp(test_models, output_dir, concurrency, weights_dirs).build()


def serve(host: str = "127.0.0.1", port: int = 7860, test_models: bool = False, output_dir: Path | None = None,
          concurrency: int = 1, inbrowser: bool = False, weights_dirs: list[str | os.PathLike] | None = None,
          threads: int | None = None, start_page: StartPage | None = None) -> None:
    """Build and serve the app (blocks until interrupted). Runs are threads of this process and torch's thread
    count is process-wide, so it is set once here: ``threads``, else the cores // ``concurrency``
    (``guidance.threads``), so that runs side by side do not oversubscribe the cores. ``start_page``, the page the
    command line serves while this starts, is told each stage and frees the address just before gradio binds it."""
    set_threads(jobs=concurrency, threads=threads)
    out = Path(output_dir or DEFAULT_OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    if start_page is not None:
        start_page.step("building the page")
    demo = build_app(test_models, out, concurrency, weights_dirs)
    if start_page is not None:
        start_page.close()
    # results and saved presets are served for download from these folders only
    allowed = [str(out), str(user_preset_dir())]
    demo.launch(server_name=host, server_port=port, allowed_paths=allowed, show_error=True, inbrowser=inbrowser,
                head=SHORTCUTS, css=CSS,
                footer_links=["api", "settings"])
