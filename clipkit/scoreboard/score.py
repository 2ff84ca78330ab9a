"""Run every method on the fixed world tasks and score the results with a CLIP that did not guide them.

Methods are guided by the world guide (their default CLIP); the world judge, another seed and image tower, ranks
each result among the world captions that differ in what the task changes, and pixel checks a person would agree
with (``checks``) must agree before a task counts as a success. Every number is measured against a baseline run
in the same process: the unguided sample for text to image, the untouched input for edits, stylisation and
enhancement. Nothing here is tuned to the results; the task lists are fixed and versioned in ``tasks``.

    from clipkit.scoreboard import run_board
    board = run_board(quick=True)          # writes bench/results/scoreboard.md and scoreboard-tasks.csv
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import re
import subprocess
import threading
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipkit.scoreboard import checks
from clipkit.scoreboard.tasks import (
    IMAGE_SIZE,
    QUICK_TASKS,
    ROWS,
    TASKS_SEED,
    TASKS_VERSION,
    VALUES,
    Row,
    Task,
    attribute_captions,
    input_image,
    task_mask,
    tasks_for,
)
from clipkit.world.scene import ONE_OBJECT_CAPTIONS, SceneSpec, render_batch, sample_scene

REPO_ROOT = Path(__file__).resolve().parents[2]
JUDGE = "world-judge"
TARGET_SUCCESS = 0.70
TARGET_PRESERVATION = 0.80

# Where a method's defaults are far too slow for a whole board in 30 minutes on 2 CPU cores, its steps are scaled
# down uniformly (every row and baseline of that method alike); everything else stays at the method's defaults.
# Planned from the time of single tasks on this shared 2-core machine (1 thread, other jobs running), before the
# full board ran: generate 0.5 s a step (150 steps: 77 s a task), guided diffusion at batch 1 1.2 s a step (50
# steps: 60 s), edit 0.27 s a step in prompt mode and 0.47 s in directional mode (100 steps: 27 / 47 s),
# CLIPstyler 0.7 s a step at 64 px (200 steps: 140 s) and 10 s a step at its default 512 px, PODA 37 s a task at
# 512 px and 6 s at 64 px. With every default, 20 tasks a row would take over 2 hours (over 10 with
# CLIPstyler at 512 px). The diffusion rows ran 15 of 50 steps (3 passes of 16 views) until its defaults became
# 25 steps of 3 passes of 8 views, each pass also 1.5x cheaper (bench/guided_step.py): 8.5 s a task, at the defaults.
BUDGET: dict[str, dict[str, Any]] = {
    "generate": {"steps": 40},  # x 0.27
    "edit": {"steps": 30},  # x 0.3, both edit rows
    # x 0.06 with its step-based schedule; at the world's 64 px: 512 px upsamples the 64 px input 8 times over
    "clipstyler": {"steps": 12, "lr_decay_every": 6, "size": 64},
    "poda": {"size": 64},  # all steps kept; at the world's 64 px instead of 512 (the preview inversion's cost)
    "styleclip_mapper_train": {"steps": 300},  # x 0.3: a mapper is trained for every task
    "nada": {"steps": 100},  # x 0.33: a generator is adapted for every task
}

__all__ = ["BUDGET", "JUDGE", "ImageScore", "TaskScore", "RowScore", "Board", "score_images", "run_task",
           "run_board", "unscored_methods", "degraded_accuracy", "board_markdown", "write_board", "load_judge"]


# ---------------------------------------------------------------- judging one image

@dataclass
class ImageScore:
    """How one image answers one task: the judge's reading, the pixel checks', and whether both agree."""

    top1: str
    p_target: float
    judge_ok: bool
    pixel_ok: bool
    reading: dict[str, Any]
    probabilities: list[float] = field(repr=False, default_factory=list)

    @property
    def success(self) -> bool:
        return self.judge_ok and self.pixel_ok


def load_judge(device: str = "cpu"):
    """The world judge: a CLIP that guided nothing, so a method cannot score by fooling the CLIP it followed."""
    from clipkit.guidance.clip import load_clip

    return load_clip(JUDGE, device=device)


def score_images(images: torch.Tensor, task: Task, judge=None) -> list[ImageScore]:
    """Score (B, 3, H, W) images in [0, 1] against a task: the judge's probabilities over the task's captions
    (success needs its top-1 to be the target) and the pixel checks of what the task expects of the object.

    Two readers must agree because each alone can be fooled: the judge by texture no person would call the
    target, the pixel checks by a right-coloured blob the judge rightly calls something else."""
    judge = judge if judge is not None else load_judge()
    images = images.detach().float().cpu().clamp(0, 1)
    probabilities = judge.caption_probabilities(images, list(task.captions)).cpu()
    k = task.captions.index(task.target)
    out = []
    for image, p in zip(images, probabilities):
        top1 = task.captions[int(p.argmax())]
        ok, reading = checks.check_object(image, task.expected)
        out.append(ImageScore(top1, float(p[k]), top1 == task.target, ok, reading.as_dict(), p.tolist()))
    return out


def read_attributes(judge, image: torch.Tensor, scene: SceneSpec, attributes: Iterable[str]) -> dict[str, str]:
    """What the judge reads for each attribute of one image, choosing among `scene`'s caption once per value."""
    out = {}
    for a in attributes:
        captions = attribute_captions(scene, a)
        values = [v for v in VALUES[a] if a != "bg_colour" or v != scene.objects[0].colour]
        p = judge.caption_probabilities(image.detach().float().cpu().clamp(0, 1)[None], list(captions))[0]
        out[a] = values[int(p.argmax())]
    return out


def preservation(judge, task: Task, before: torch.Tensor, after: torch.Tensor) -> float | None:
    """Share of the attributes the task must not change that the judge reads the same before and after (each
    image read in its own scene's captions: the input's, and the scene the task asks for)."""
    if not task.keep or task.scene is None or task.target_scene is None:
        return None
    was = read_attributes(judge, before, task.scene, task.keep)
    now = read_attributes(judge, after, task.target_scene, task.keep)
    return sum(was[a] == now[a] for a in task.keep) / len(task.keep)


def masked_l2(task: Task, before: torch.Tensor, after: torch.Tensor) -> float | None:
    """L2 norm of the change outside a masked task's region (an edit must leave it exactly as it was: 0)."""
    mask = task_mask(task)
    if mask is None:
        return None
    if after.shape[-2:] != before.shape[-2:]:
        return math.inf
    return float(((after.float().cpu() - before.float().cpu()) * (1 - mask[0])).pow(2).sum().sqrt())


# ---------------------------------------------------------------- memory

class PeakMemory:
    """Peak resident memory of this process while a block runs (psutil sampling every 10 ms; without psutil,
    ``resource.getrusage`` max RSS, which only shows a rise above the process's earlier high-water mark)."""

    def __init__(self) -> None:
        try:
            import psutil

            self._proc = psutil.Process()
            self.source = "psutil RSS, sampled every 10 ms"
        except ImportError:  # pragma: no cover - psutil ships with the dev requirements
            self._proc = None
            self.source = "resource.getrusage ru_maxrss"
        self.start_mb = self.peak_mb = self._now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _now(self) -> float:
        if self._proc is not None:
            return self._proc.memory_info().rss / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, self._now())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self._now())


# ---------------------------------------------------------------- running one task

@dataclass
class TaskScore:
    """One task of one row: the method's result and the baseline's, as the judge and the pixel checks read them."""

    row: str
    method: str
    task: str
    kind: str
    attribute: str
    prompt: str
    target: str
    heldout: bool
    masked: bool
    seed: int
    top1: str = ""
    p_before: float = math.nan
    p_after: float = math.nan
    gain: float = math.nan
    judge_ok: bool = False
    pixel_ok: bool = False
    success: bool = False
    reading: dict[str, Any] = field(default_factory=dict)
    baseline_top1: str = ""
    baseline_p: float = math.nan
    baseline_gain: float = math.nan
    baseline_success: bool = False
    baseline_pixel_ok: bool = False
    preservation: float | None = None
    baseline_preservation: float | None = None
    masked_l2: float | None = None
    seconds: float = math.nan
    baseline_seconds: float = math.nan
    peak_mb: float = math.nan
    rise_mb: float = math.nan
    error: str = ""


# the settings that carry an edit's two texts, per method (direction-mode rows)
_TEXT_FIELDS = {"edit": ("source_text", "target_text"), "global_directions": ("neutral", "target"),
                "nada": ("source", "target")}


def _settings_for(row: Row, task: Task) -> dict[str, Any]:
    """What the task asks of this row's method, as settings overrides."""
    if row.kind == "text-to-image" or row.kind == "style":
        return {"prompt": task.prompt}
    if row.kind in ("edit", "latent-edit"):
        if row.mode == "direction":
            source, target = _TEXT_FIELDS[row.method]
            return {source: task.source_prompt, target: task.prompt}
        return {"prompt": task.prompt}
    return {}


def _baseline_settings(row: Row) -> dict[str, Any] | None:
    """The same method with no guidance at all (None: the baseline is the untouched input)."""
    if row.method == "diffusion":
        return {"guidance_scale": 0.0, "cfg_scale": 0.0, "recurrence": 1}  # no CLIP, no text
    return None


def _field_names(method: str) -> set[str]:
    from clipkit.api import get_method

    return set(get_method(method).field_names())


def _run(method: str, settings: dict[str, Any], image: torch.Tensor | None, mask: torch.Tensor | None,
         clip: Any, cancelled: bool = False) -> torch.Tensor:
    from clipkit.api import CancelToken, run

    inputs = {} if image is None else {"image": image}
    if mask is not None:
        inputs["mask"] = mask
    cancel = None
    if cancelled:
        cancel = CancelToken()
        cancel.cancel()
    return run(method, clip=clip, cancel=cancel, **inputs, **settings).tensors.detach().float().cpu()


def _inversion(task: Task, image: torch.Tensor, budget: dict[str, dict[str, Any]], cache: dict):
    """The task's input inverted into the StyleGAN (once per board, shared by every StyleGAN row): (the
    reconstruction (1, 3, H, W), its latent artifact)."""
    from clipkit.api import run

    key = ("inversion", task.id)
    if key not in cache:
        res = run("invert", image=image, **budget.get("invert", {}))
        cache[key] = (res.tensors.detach().float().cpu(), res.artifacts["latent"])
    return cache[key]


def _run_latent_edit(row: Row, settings: dict[str, Any], latent: Any, clip: Any) -> torch.Tensor:
    """A StyleGAN row on a start latent: the method (and, for a trainer, the method that applies what it
    trained); the edited images only (a method that shows original / edited pairs gives its second images)."""
    from clipkit.api import get_method, run

    takes_latent = "latent" in {i.name for i in get_method(row.method).artifact_inputs}
    res = run(row.method, clip=clip, **({"latent": latent} if takes_latent else {}), **settings)
    if row.then:
        takes = {i.name for i in get_method(row.then).artifact_inputs}
        trained = {k: v for k, v in res.artifacts.items() if k in takes and k != "latent"}
        res = run(row.then, clip=clip, latent=latent, **trained)
    images = res.tensors.detach().float().cpu()
    return images[1::2] if str(res.run.extras.get("layout", "")).startswith("pairs") else images


def run_task(row: Row, task: Task, judge, *, seed: int = 0, clip: Any = None,
             budget: dict[str, dict[str, Any]] | None = None, overrides: dict[str, Any] | None = None,
             cache: dict | None = None) -> tuple[TaskScore, torch.Tensor | None, torch.Tensor | None]:
    """Run one task on one row and its baseline, and score both; returns (score, output, baseline output).

    The baseline runs in the same process with the same settings, seed and budget, minus the guidance: what the
    method adds is the difference, not an absolute number that drifts with the machine or the judge."""
    budget = BUDGET if budget is None else budget
    cache = {} if cache is None else cache
    names = _field_names(row.method)
    settings = {**budget.get(row.method, {}), **row.settings, **_settings_for(row, task), **(overrides or {})}
    if "seed" in names:
        settings["seed"] = seed
    settings = {k: v for k, v in settings.items() if k in names}
    score = TaskScore(row.name, row.method, task.id, task.kind, task.attribute, task.prompt, task.target,
                      task.heldout, task.masked, seed)
    image = input_image(task)
    mask = task_mask(task)
    try:  # a task that fails to run is a failed task, not a failed board
        # the baseline: the unguided sample (text to image, shared by rows that differ only in guidance) or the
        # untouched input
        t0 = time.perf_counter()
        base_settings = _baseline_settings(row)
        key: tuple = ("input",)
        if row.kind == "latent-edit":  # the baseline is the inverted input redrawn, unedited
            baseline, latent = _inversion(task, image, budget, cache)
            key = ("inversion",)
        elif task.scene is not None:
            baseline = image
        else:
            key = (row.method, repr(sorted({**settings, **(base_settings or {})}.items())))
            if key not in cache:
                if base_settings is not None:
                    cache[key] = _run(row.method, {**settings, **base_settings}, None, None, clip)
                else:  # generate: its starting image, the run cancelled before the first step
                    cache[key] = _run(row.method, settings, None, None, clip, cancelled=True)
            baseline = cache[key]
        score.baseline_seconds = time.perf_counter() - t0
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            if row.kind == "latent-edit":
                out = _run_latent_edit(row, settings, latent, clip)
            else:
                out = _run(row.method, settings, image, mask, clip)
            score.seconds = time.perf_counter() - t0
        score.peak_mb, score.rise_mb = mem.peak_mb, mem.peak_mb - mem.start_mb
    except Exception as e:
        score.error = f"{type(e).__name__}: {e}"[:300]
        return score, None, None
    after_score = score_images(out[:1], task, judge)[0]
    base_key = ("score", task.id, *key)  # an image task's baseline is its input, whichever row runs it
    if base_key not in cache:
        cache[base_key] = score_images(baseline[:1], task, judge)[0]
    base_score: ImageScore = cache[base_key]
    p_before = base_score.p_target  # before = the input (edits) or the unguided sample (text to image)
    score.top1, score.p_after, score.p_before = after_score.top1, after_score.p_target, p_before
    score.gain = after_score.p_target - p_before
    score.judge_ok, score.pixel_ok, score.success = after_score.judge_ok, after_score.pixel_ok, after_score.success
    score.reading = after_score.reading
    score.baseline_top1, score.baseline_p = base_score.top1, base_score.p_target
    score.baseline_gain = base_score.p_target - p_before
    score.baseline_success, score.baseline_pixel_ok = base_score.success, base_score.pixel_ok
    if image is not None:
        score.preservation = preservation(judge, task, image[0], out[0])
        score.baseline_preservation = preservation(judge, task, image[0], baseline[0])
        if row.kind != "latent-edit":  # StyleGAN edits take no mask: the whole picture is theirs to change
            score.masked_l2 = masked_l2(task, image[0], out[0])
    return score, out, baseline


# ---------------------------------------------------------------- a row, the board

@dataclass
class RowScore:
    """One line of the board: means over the row's tasks, and which targets it meets."""

    row: str
    method: str
    kind: str
    tasks: int
    errors: int
    success: float
    baseline_success: float
    gain: float
    baseline_gain: float
    preservation: float | None
    masked_l2: float | None
    seconds: float
    peak_mb: float
    rise_mb: float
    settings: dict[str, Any]
    note: str = ""

    @property
    def meets_success(self) -> bool:
        return self.success >= TARGET_SUCCESS

    @property
    def meets_preservation(self) -> bool | None:
        return None if self.preservation is None else self.preservation >= TARGET_PRESERVATION

    @property
    def beats_baseline(self) -> bool:
        return self.success > self.baseline_success and self.gain > self.baseline_gain

    def misses(self) -> list[str]:
        out = []
        if not self.meets_success:
            out.append(f"success {self.success:.0%} < {TARGET_SUCCESS:.0%}")
        if self.meets_preservation is False:
            out.append(f"preservation {self.preservation:.0%} < {TARGET_PRESERVATION:.0%}")
        if not self.beats_baseline:
            out.append("does not beat its baseline")
        if self.masked_l2 is not None and self.masked_l2 != 0:
            out.append(f"masked L2 {self.masked_l2:.3g} != 0")
        if self.errors:
            out.append(f"{self.errors} task(s) failed to run")
        return out


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else math.nan


def aggregate(row: Row, scores: list[TaskScore], settings: dict[str, Any]) -> RowScore:
    """Means over a row's tasks; a task that failed to run counts as a failure, not as missing."""
    n = len(scores)
    ran = [s for s in scores if not s.error]
    pres = [s.preservation for s in ran if s.preservation is not None]
    l2 = [s.masked_l2 for s in ran if s.masked_l2 is not None]
    return RowScore(
        row=row.name, method=row.method, kind=row.kind, tasks=n, errors=n - len(ran),
        success=sum(s.success for s in scores) / max(n, 1),
        baseline_success=sum(s.baseline_success for s in scores) / max(n, 1),
        gain=_mean([s.gain for s in ran]), baseline_gain=_mean([s.baseline_gain for s in ran]),
        preservation=_mean(pres) if pres else None, masked_l2=max(l2) if l2 else None,
        seconds=_mean([s.seconds for s in ran]), peak_mb=max([s.peak_mb for s in ran], default=math.nan),
        rise_mb=max([s.rise_mb for s in ran], default=math.nan), settings=settings, note=row.note)


@dataclass
class Board:
    """A whole board: rows, per-task scores, the degraded-render judge table and what it ran on."""

    rows: list[RowScore]
    tasks: list[TaskScore]
    degraded: list[dict[str, Any]]
    meta: dict[str, Any]

    def row(self, name: str) -> RowScore:
        return next(r for r in self.rows if r.row == name)


def _budget_notes(rows: Iterable[Row], budget: dict[str, dict[str, Any]]) -> list[str]:
    """'method: steps 150 -> 50' for every setting the budget changes from the method's default."""
    from clipkit.api import get_method

    notes = []
    for method in dict.fromkeys(r.method for r in rows):
        changes = budget.get(method, {})
        if not changes:
            continue
        defaults = get_method(method).defaults()
        parts = [f"{k} {getattr(defaults, k, '?')} -> {v}" for k, v in changes.items()]
        notes.append(f"{method}: " + ", ".join(parts))
    return notes


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _versions() -> dict[str, str]:
    import open_clip

    return {"torch": torch.__version__, "open_clip": getattr(open_clip, "__version__", "?"),
            "python": platform.python_version()}


def unscored_methods() -> list[str]:
    """Registered methods the board has no row for: a new method should get a row (and tasks) here."""
    from clipkit.api import methods

    covered = {r.method for r in ROWS.values()} | {r.then for r in ROWS.values() if r.then}
    return sorted(m for m in methods() if m not in covered)


def run_board(
    rows: Sequence[str] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    out: str | os.PathLike | None = "bench/results",
    clip: Any = None,
    judge: Any = None,
    budget: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    limit: int | None = None,
    threads: int | None = 1,
    degraded_n: int | None = None,
    save_images: bool = True,
    log: Callable[[str], None] | None = print,
    merge: bool = False,
) -> Board:
    """Run the rows (default: every row of ``tasks.ROWS``) on their fixed tasks, score them, write the board.

    ``seed`` seeds the methods (task k runs at seed + k); the task lists do not depend on it. ``budget`` scales
    slow methods' steps (default ``BUDGET``); ``overrides`` (method or row name -> settings) is for tests only;
    ``limit`` caps the tasks per row. ``clip`` swaps the guiding CLIP ("tiny" for plumbing tests). With ``out``,
    writes ``scoreboard.md`` and ``scoreboard-tasks.csv`` there (atomically) and contact sheets of the images;
    with ``merge``, the rows not run now are kept from the board already there (``merge_boards``)."""
    started = time.perf_counter()
    say = log or (lambda _m: None)
    if threads:
        torch.set_num_threads(threads)
    chosen = [ROWS[r] for r in (rows or list(ROWS))]
    budget = BUDGET if budget is None else budget
    judge = judge if judge is not None else load_judge()
    cache: dict = {}
    all_scores: list[TaskScore] = []
    row_scores: list[RowScore] = []
    sheets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for row in chosen:
        tasks = tasks_for(row)
        n = min(len(tasks), QUICK_TASKS if quick else len(tasks), limit or len(tasks))
        extra = {**(overrides or {}).get(row.method, {}), **(overrides or {}).get(row.name, {})}
        names = _field_names(row.method)
        settings = {k: v for k, v in {**budget.get(row.method, {}), **row.settings, **extra}.items() if k in names}
        say(f"[{row.name}] {n} tasks, settings {settings}")
        scores = []
        for k, task in enumerate(tasks[:n]):
            score, result, baseline = run_task(row, task, judge, seed=seed + k, clip=clip, budget=budget,
                                               overrides=extra, cache=cache)
            scores.append(score)
            if result is not None and baseline is not None:
                sheets.setdefault(row.name, []).append((baseline[:1], result[:1]))
            say(f"  {task.id} {'OK ' if score.success else 'no '} top1={score.top1!r} gain={score.gain:+.3f} "
                f"pixels={score.reading} {score.seconds:.1f}s" + (f" ERROR {score.error}" if score.error else ""))
        all_scores += scores
        row_scores.append(aggregate(row, scores, settings))
    say("[degraded renders] judge accuracy")
    degraded = degraded_accuracy(judge, n=degraded_n if degraded_n is not None else (10 if quick else 40))
    meta = {
        "commit": _git_commit(), **_versions(), "seed": seed, "tasks_version": TASKS_VERSION,
        "tasks_seed": TASKS_SEED, "quick": quick, "threads": torch.get_num_threads(), "judge": JUDGE,
        "guide": "tiny test CLIP" if clip == "tiny" else ("world-guide (each method's default)" if clip is None
                                                          else getattr(clip, "name", str(clip))),
        "budget": _budget_notes(chosen, budget), "memory": PeakMemory().source,
        "seconds": time.perf_counter() - started, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "unscored": unscored_methods(),
    }
    board = Board(row_scores, all_scores, degraded, meta)
    if merge and out is not None:
        board = merge_boards(board, out, budget)
    if out is not None:
        write_board(board, out)
        if save_images:
            _write_sheets(sheets, Path(out) / "scoreboard-images")
    say(board_markdown(board))
    return board


# ---------------------------------------------------------------- the judge on degraded renders

def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    pad = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    images = F.conv2d(pad, k, groups=3)
    pad = F.pad(images, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(pad, k.transpose(-1, -2), groups=3)


def _silhouettes(scenes: list[SceneSpec]) -> torch.Tensor:
    """(B, 1, H, W) where each scene's object is drawn (rendered alone, white on black)."""
    objs = [replace(s.objects[0], colour="white", shade=(0.0, 0.0, 0.0), rgb=None) for s in scenes]
    on = render_batch([SceneSpec((o,), "plain", "black", "bright") for o in objs], IMAGE_SIZE)
    off = render_batch([SceneSpec((), "plain", "black", "bright")], IMAGE_SIZE)
    return ((on - off).amax(1, keepdim=True) / (on - off).amax().clamp_min(1e-6)).clamp(0, 1)


DEGRADATIONS: dict[str, str] = {
    "clean": "rendered at 64 px",
    "32 px up-sampled": "rendered at 32 px, bilinear to 64 (the world-ldm decodes 32 px)",
    "blur": "Gaussian blur, sigma 1.5 px",
    "noise": "Gaussian pixel noise, sigma 0.08",
    "mottled ground": "the ground under smooth colour blotches (std 0.05 per channel, 4x4 grid)",
    "all four": "32 px up-sampled, blurred, noisy, mottled",
}


def degrade(scenes: list[SceneSpec], name: str, generator: torch.Generator) -> torch.Tensor:
    """The scenes rendered and degraded the way generated images differ from renders."""
    def upsampled() -> torch.Tensor:
        return F.interpolate(render_batch(scenes, 32), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                             align_corners=False)

    def mottle(x: torch.Tensor) -> torch.Tensor:
        blotches = torch.randn(len(scenes), 3, 4, 4, generator=generator) * 0.05
        field_ = F.interpolate(blotches, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return x + field_ * (1 - _silhouettes(scenes))

    def noise(x: torch.Tensor) -> torch.Tensor:
        return x + 0.08 * torch.randn(x.shape, generator=generator)

    if name == "clean":
        x = render_batch(scenes, IMAGE_SIZE)
    elif name == "32 px up-sampled":
        x = upsampled()
    elif name == "blur":
        x = _blur(render_batch(scenes, IMAGE_SIZE), 1.5)
    elif name == "noise":
        x = noise(render_batch(scenes, IMAGE_SIZE))
    elif name == "mottled ground":
        x = mottle(render_batch(scenes, IMAGE_SIZE))
    elif name == "all four":
        x = noise(_blur(mottle(upsampled()), 1.5))
    else:
        raise ValueError(f"unknown degradation {name!r}; one of {list(DEGRADATIONS)}")
    return x.clamp(0, 1)


def degraded_accuracy(judge, n: int = 30, seed: int = TASKS_SEED + 4) -> list[dict[str, Any]]:
    """How often the judge (top-1 among the 66 one-object captions) and the pixel checks name the colour and
    shape of bright one-object renders, clean and degraded: how far either reader can be trusted on generated
    images, which are soft, noisy and on blotchy grounds."""
    g = torch.Generator().manual_seed(seed)
    scenes = []
    while len(scenes) < n:
        s = sample_scene(g, "train", n_objects=1)
        s = replace(s, lighting="bright")
        if s.bg_colour != s.objects[0].colour:
            scenes.append(s)
    captions = list(ONE_OBJECT_CAPTIONS)
    rows = []
    for name in DEGRADATIONS:
        images = degrade(scenes, name, torch.Generator().manual_seed(seed))
        top = judge.caption_probabilities(images, captions).argmax(1).tolist()
        judged = [captions[i].split()[1:] for i in top]
        readings = [checks.read_object(im) for im in images]
        truth = [(s.objects[0].colour, s.objects[0].shape) for s in scenes]
        rows.append({
            "degradation": name, "n": n,
            "judge_caption": sum(tuple(j) == t for j, t in zip(judged, truth)) / n,
            "judge_colour": sum(j[0] == t[0] for j, t in zip(judged, truth)) / n,
            "judge_shape": sum(j[1] == t[1] for j, t in zip(judged, truth)) / n,
            "pixel_colour": sum(r.colour == t[0] for r, t in zip(readings, truth)) / n,
            "pixel_shape": sum(r.shape == t[1] for r, t in zip(readings, truth)) / n,
        })
    return rows


# ---------------------------------------------------------------- writing

def _atomic_write(path: Path, text: str) -> None:
    """Write beside the target and move over it: a reader never sees half a board."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _pct(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f} %"


def _num(v: float | None, fmt: str = "+.3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def board_markdown(board: Board) -> str:
    """The board as Markdown: header, one row per method, targets met, the degraded-render table."""
    m = board.meta
    lines = [
        "# Method scoreboard" + (" (quick subset)" if m.get("quick") else ""),
        "",
        f"- commit {m['commit']}; torch {m['torch']}, open_clip {m['open_clip']}, python {m['python']}",
        f"- seed {m['seed']} (task k runs at seed + k); tasks version {m['tasks_version']} "
        f"(task seed {m['tasks_seed']}); {m['threads']} torch thread(s) on {m['machine']}",
        f"- judge: {m['judge']} (scores only); guide: {m['guide']}",
        f"- whole board: {m['seconds'] / 60:.1f} min; memory: {m['memory']}",
        "- steps scaled down for the time budget (every other setting is the method's default): "
        + ("; ".join(m["budget"]) if m["budget"] else "none"),
        *([f"- registered methods with no row yet: {', '.join(m['unscored'])}"] if m.get("unscored") else []),
        *([f"- {m['merged']}"] if m.get("merged") else []),
        "",
        "Success: the judge's top-1 among the task's captions is the target AND the pixel checks agree "
        "(colour/shape as the task expects). Gain: judge probability of the target after minus before (edits: "
        "the input; text to image: the unguided sample of the same seed), so a baseline's own gain is 0 by "
        "construction and beating it means a positive gain. Preservation: share of the attributes "
        "the task must not change that the judge reads the same. Masked L2: largest pixel change outside the "
        "mask of a masked edit. Baseline: the same task with no guidance (unguided sample; the input itself for "
        "edits, stylisation and enhancement; StyleGAN edits: the input's inversion, redrawn), run in the same "
        "process. s/task: the method's run alone (a row's "
        f"first task includes loading its models). Targets: success ≥ {TARGET_SUCCESS:.0%}, "
        f"preservation ≥ {TARGET_PRESERVATION:.0%} (image-to-image rows), beats baseline (more successes and "
        "more gain).",
        "",
        "| row | tasks | success | baseline success | target gain | baseline gain | preservation | masked L2 "
        "| s/task | peak MB (rise) | targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in board.rows:
        met = [f"success {'✓' if r.meets_success else '✗'}"]
        if r.meets_preservation is not None:
            met.append(f"preservation {'✓' if r.meets_preservation else '✗'}")
        met.append(f"beats baseline {'✓' if r.beats_baseline else '✗'}")
        if r.masked_l2 is not None:
            met.append(f"mask {'✓' if r.masked_l2 == 0 else '✗'}")
        tasks = f"{r.tasks}" + (f" ({r.errors} failed)" if r.errors else "")
        lines.append(
            f"| {r.row} | {tasks} | {_pct(r.success)} | {_pct(r.baseline_success)} | {_num(r.gain)} | "
            f"{_num(r.baseline_gain)} | {_pct(r.preservation)} | {_num(r.masked_l2, '.3g')} | "
            f"{_num(r.seconds, '.1f')} | {_num(r.peak_mb, ',.0f')} ({_num(r.rise_mb, '+,.0f')}) | {', '.join(met)} |")
    lines += ["", "Rows: " + "; ".join(f"**{r.row}** {r.note}" for r in board.rows if r.note), ""]
    lines += _breakdown(board)
    lines += [
        "## The judge and the pixel checks on degraded renders",
        "",
        "Bright one-object world renders, degraded the way generated images differ from renders; accuracy of the "
        "judge's top-1 among the 66 one-object captions (whole caption, its colour, its shape) and of the pixel "
        "checks (colour, shape).",
        "",
        "| degradation | n | judge caption | judge colour | judge shape | pixel colour | pixel shape |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in board.degraded:
        lines.append(f"| {d['degradation']} ({DEGRADATIONS[d['degradation']]}) | {d['n']} | "
                     f"{_pct(d['judge_caption'])} | {_pct(d['judge_colour'])} | {_pct(d['judge_shape'])} | "
                     f"{_pct(d['pixel_colour'])} | {_pct(d['pixel_shape'])} |")
    return "\n".join(lines) + "\n"


def _breakdown(board: Board) -> list[str]:
    """Successes per row and per kind of task (what the task changes; held-out pairs apart): where a row fails."""
    groups: dict[str, dict[str, list[TaskScore]]] = {}
    for t in board.tasks:
        kind = t.attribute if t.attribute != "object" else ("held-out pair" if t.heldout else "seen pair")
        groups.setdefault(t.row, {}).setdefault(kind, []).append(t)
    if not groups:
        return []
    lines = ["## Successes by kind of task", "", "| row | " + " | ".join(["kind (judge ✓ / pixels ✓ / both ✓ of n)"])
             + " |", "|---|---|"]
    for row, kinds in groups.items():
        cells = [f"{k} {sum(t.judge_ok for t in ts)}/{sum(t.pixel_ok for t in ts)}/{sum(t.success for t in ts)} "
                 f"of {len(ts)}" for k, ts in kinds.items()]
        lines.append(f"| {row} | {'; '.join(cells)} |")
    return [*lines, ""]


CSV_FIELDS = [f for f in TaskScore.__dataclass_fields__]


def tasks_csv(scores: Iterable[TaskScore]) -> str:
    """One line per task and row (the reading of the pixel checks as JSON-like text)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for s in scores:
        d = asdict(s)
        d["reading"] = ";".join(f"{k}={v}" for k, v in s.reading.items())
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else v) for k, v in d.items()})
    return buf.getvalue()


def read_tasks_csv(path: str | os.PathLike) -> list[TaskScore]:
    """The per-task scores a board wrote (``tasks_csv``), typed again."""
    types = typing.get_type_hints(TaskScore)
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for line in csv.DictReader(f):
            values: dict[str, Any] = {}
            for name, text in line.items():
                kind = types[name]
                if name == "reading":
                    values[name] = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
                elif kind is bool:
                    values[name] = text == "True"
                elif kind is int:
                    values[name] = int(text)
                elif kind in (float, float | None):
                    values[name] = None if text == "" and kind is not float else (float(text) if text else math.nan)
                else:
                    values[name] = text
            out.append(TaskScore(**values))
    return out


def merge_boards(new: Board, old_folder: str | os.PathLike,
                 budget: dict[str, dict[str, Any]] | None = None) -> Board:
    """``new`` with the rows it did not run taken from the board in ``old_folder`` (its per-task CSV), in the
    order of ``ROWS``; the header says which rows came from which commit. For adding rows without re-running
    the rest: both boards must have run the same ``TASKS_VERSION``."""
    folder = Path(old_folder)
    md, table = folder / "scoreboard.md", folder / "scoreboard-tasks.csv"
    if not table.exists():
        return new
    header = md.read_text(encoding="utf-8") if md.exists() else ""
    version = re.search(r"tasks version (\d+)", header)
    if version is None or int(version.group(1)) != TASKS_VERSION:
        raise ValueError(f"{md} ran another task list (version {version and version.group(1)}); run every row")
    commit = re.search(r"- commit (.+?); torch", header)
    ran = {r.row for r in new.rows}
    kept = [t for t in read_tasks_csv(table) if t.row not in ran and t.row in ROWS]
    budget = BUDGET if budget is None else budget
    by_row: dict[str, list[TaskScore]] = {}
    for t in kept:
        by_row.setdefault(t.row, []).append(t)
    rows = []
    for name, row in ROWS.items():
        if name in ran:
            rows.append(new.row(name))
        elif name in by_row:
            names = _field_names(row.method)
            settings = {k: v for k, v in {**budget.get(row.method, {}), **row.settings}.items() if k in names}
            rows.append(aggregate(row, by_row[name], settings))
    tasks = [t for r in rows for t in (new.tasks if r.row in ran else by_row[r.row]) if t.row == r.row]
    meta = {**new.meta, "merged": f"rows {', '.join(by_row)} from the board of commit "
                                  f"{commit.group(1) if commit else 'unknown'} (same tasks, version {TASKS_VERSION})"}
    meta["budget"] = _budget_notes([ROWS[r.row] for r in rows], budget)
    return Board(rows, tasks, new.degraded, meta)


def write_board(board: Board, out: str | os.PathLike) -> tuple[Path, Path]:
    """``scoreboard.md`` and ``scoreboard-tasks.csv`` under `out`, each written atomically."""
    out = Path(out)
    md, table = out / "scoreboard.md", out / "scoreboard-tasks.csv"
    _atomic_write(md, board_markdown(board))
    _atomic_write(table, tasks_csv(board.tasks))
    return md, table


def _write_sheets(sheets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], folder: Path) -> None:
    """Per row, one PNG: a line per task, baseline (or input) on the left, the result on the right, 64 px each."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for row, pairs in sheets.items():
        tiles = []
        for before, after in pairs:
            a = checks.as_image(before)
            b = checks.as_image(after)
            tiles.append(torch.cat([a, torch.ones(3, IMAGE_SIZE, 2), b], dim=2))
        sheet = torch.cat([torch.cat([t, torch.ones(3, 2, t.shape[-1])], dim=1) for t in tiles], dim=1)
        arr = (sheet.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        path = folder / f"{row}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        Image.fromarray(arr).resize((arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST).save(tmp)
        os.replace(tmp, path)

