"""Batch runs: one method over folders / globs of inputs, resumable, logged, never writing over an input.

``clipkit batch --preset P --input DIR|GLOB [--input ...] --output DIR``; the style and enhance CLIs
(``clipkit style``, ``clipkit enhance``) run their folders through the same engine.

- Inputs: image files for methods with an image input; for methods without one (generate) ``.txt`` files whose
  text fills the method's text setting (the prompt), one job per file.
- Each job writes ``OUTPUT/<input stem>.png`` with its settings embedded; a run that samples a batch (``batch``
  N > 1: generate, diffusion) writes all N, ``<input stem>-1.png`` ... ``-N.png``, each carrying the batch's
  settings (any one of them reproduces the batch). A rerun skips outputs that already
  carry the same settings (resume); an output made with other settings is a failure for that file unless
  ``--overwrite``. Outputs that would land on an input, a mask, the preset or another protected file (whatever
  ``--overwrite`` says), two inputs with one output name, a mask folder that is the output folder, and an output
  folder that cannot be created or written stop the run before anything is written.
- One failing input (an unreadable image, a broken file, any error of its run) is logged with its reason and the
  run goes on to the next; the summary lists the failures.
- The output folder is locked by the job writing it (``OUTPUT/.clipkit.lock``, see ``guidance.files.OutputLock``):
  a second job on the same folder is refused until the first ends; the lock of a job that died is taken over.
- Every run appends to its own JSON-lines log ``OUTPUT/batch-<UTC time>.jsonl``: a ``start`` line (preset,
  settings, command), a ``file`` line per input (status, output, seconds, timings, final losses, error) and a
  ``summary`` line. The exit status is 0 when nothing failed, 1 when some file failed.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from clipkit import api
from clipkit.guidance.clip import TINY_MODEL
from clipkit.guidance.errors import ClipKitError, ParameterError
from clipkit.guidance.files import OutputLock, check_not_protected, check_output_dir
from clipkit.guidance.images import numbered_outputs, plan_outputs, read_settings
from clipkit.presets import load_preset, settings_dict
from clipkit.registry import Method

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
TEXT_EXTS = (".txt",)


@dataclass
class Job:
    input: Path
    output: Path  # where its image goes, or the name its batch's numbered images derive from
    status: str = "todo"  # todo | done (already there, same settings) | conflict (there, other settings)
    outputs: list[Path] = field(default_factory=list)  # every file it writes (``numbered_outputs(output, N)``)


# One input's run: keyword inputs of the method (``image=path`` or ``prompt=text``, ``mask=path``) -> result.
RunOne = Callable[..., api.Result]
# Called with each finished result before it is saved: may add to ``result.record`` or keep ``result.run.extras``.
OnResult = Callable[[Job, api.Result], None]


@dataclass
class BatchSpec:
    """What a batch runs, whoever drives it (a preset, a CLI's flags): the settings every output must carry and
    how one input becomes a result. ``method_spec`` builds one for a registered method."""

    method: str
    want: dict[str, Any]  # the settings record (``record["settings"]``) of a finished output
    run_one: RunOne
    image_input: str | None = "image"  # None: the inputs are .txt files filling ``text_field``
    text_field: str | None = None
    takes_mask: bool = False
    ignore: tuple[str, ...] = ()  # record-only keys, not compared on resume
    clip_name: str | None = None  # the CLIP an output must have been made with (None: not checked)
    images: int = 1  # images one run returns (its ``batch`` setting): each is saved
    label: str | None = None  # what the summary line calls the run (the preset name); default the method
    on_result: OnResult | None = None


def method_spec(method: Method, settings: Any, clip: Any = None, cancel: api.CancelToken | None = None,
                on_result: OnResult | None = None, label: str | None = None) -> BatchSpec:
    """The batch of a registered method with these settings (``clip``: a ClipModel, "tiny" or None)."""
    if not method.image_inputs and not method.text_field:
        raise ParameterError(f"method '{method.name}' takes no inputs; batch has nothing to iterate over")

    def run_one(**inputs: Any) -> api.Result:
        return api.run(method.name, settings, clip=clip, cancel=cancel, **inputs)

    clip_name = TINY_MODEL if clip == "tiny" else getattr(clip, "name", None) or getattr(settings, "model", None)
    return BatchSpec(method.name, {"method": method.name, **settings_dict(settings)}, run_one,
                     image_input=method.image_inputs[0].name if method.image_inputs else None,
                     text_field=method.text_field,
                     takes_mask=any(i.mask for i in method.image_inputs), ignore=method.record_only,
                     clip_name=clip_name, label=label, on_result=on_result,
                     images=int(getattr(settings, "batch", 1)))


def expand_inputs(patterns: list[str], exts: tuple[str, ...]) -> list[Path]:
    """Files from folders (not recursive), globs (``**`` allowed) and plain paths, filtered by extension."""
    found: dict[Path, None] = {}
    for pat in patterns:
        p = Path(pat).expanduser()
        if p.is_dir():
            hits = sorted(x for x in p.iterdir() if x.is_file())
        elif p.is_file():
            hits = [p]
        else:
            hits = sorted(Path(x) for x in glob.glob(str(p), recursive=True) if Path(x).is_file())
            if not hits:
                raise ParameterError(f"{pat}: no such folder or file, and the glob matches nothing")
        for h in hits:
            if h.suffix.lower() in exts and not h.name.startswith("."):
                found[h] = None
    return list(found)


def plan(spec: BatchSpec, inputs: list[Path], output: Path, overwrite: bool = False,
         protect: list[Path] | tuple[Path, ...] = ()) -> list[Job]:
    """Jobs with their output names and resume status; refuses outputs on inputs or on ``protect`` (masks, the
    preset ...), whatever ``overwrite`` says, and name collisions.

    An output counts as done when it carries the same settings and, where it records one, the same CLIP
    (``spec.clip_name``: the test CLIP's name in test mode), so test-mode outputs are never taken for real ones."""
    if any(p.parent.resolve() == output.resolve() for p in inputs):
        raise ParameterError(f"the output folder {output} holds inputs; choose another --output "
                             "(inputs are never written over)")
    jobs = [Job(p, out, outputs=numbered_outputs(out, spec.images)) for p, out in plan_outputs(inputs, output)]
    try:
        check_not_protected([o for j in jobs for o in j.outputs], [*inputs, *protect], "an input, a mask or the preset")
    except ClipKitError as e:
        raise ParameterError(f"{e} (inputs, masks and presets are never written over, even with --overwrite)") from e
    for j in jobs:  # numbered names cannot collide: the number after the last "-" tells them apart
        there = [o for o in j.outputs if o.exists()]
        if not there or overwrite:
            continue
        same = [_same_settings(spec, j.input, o) for o in there]
        j.status = "conflict" if not all(same) else "done" if len(there) == len(j.outputs) else "todo"
    return jobs


def _same_settings(spec: BatchSpec, path: Path, output: Path) -> bool:
    """Whether an earlier output carries this job's settings and, where it records one, its CLIP."""
    try:
        stored = api.batch_settings(_settings_of(output) or {})  # an image of a batch: the batch's settings
        used = stored.pop("clip", None)
        for key in spec.ignore:
            stored.pop(key, None)
        return stored == want_for(spec, path) and (used is None or used == spec.clip_name)
    except (OSError, UnicodeDecodeError):
        return False


def want_for(spec: BatchSpec, path: Path) -> dict[str, Any]:
    """The settings a job's output must carry (the text field comes from the input file)."""
    if spec.image_input is None and spec.text_field:
        return {**spec.want, spec.text_field: _read_text(path)}
    return spec.want


def _settings_of(path: Path) -> dict[str, Any] | None:
    """Settings embedded in an earlier output; None when it has none or cannot be read."""
    try:
        return dict(read_settings(path).get("settings") or {}) or None
    except (OSError, ValueError):
        return None


def _names(job: Job) -> str:
    """A job's outputs for a message: the file, or the first and last of its batch."""
    first, *rest = job.outputs
    return str(first) if not rest else f"{first} ... {rest[-1].name} ({len(job.outputs)} images)"


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


class _Log:
    """Append-only JSON lines, flushed per line so a crash keeps what was done."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f: TextIO = open(path, "a", encoding="utf-8")

    def write(self, **row: Any) -> None:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row}
        self._f.write(json.dumps(row, default=str) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def run_batch(
    preset: str,
    inputs: list[str],
    output: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    clip: Any = None,
    progress: bool = True,
    out: TextIO | None = None,
    masks: str | os.PathLike | None = None,
    method_name: str | None = None,
) -> int:
    """Run ``preset`` over ``inputs`` into ``output``; returns the exit status (0 ok, 1 some files failed).

    ``masks``: for methods with region masks, a folder of ``<input stem>.png`` masks (white = edit); inputs
    without one are edited whole. ``method_name``: run another method than the preset's, one that borrows its
    presets (``--method poda --preset style-monet``)."""
    p = load_preset(preset)
    method, settings = api.build_settings(method_name or p.method, p, **(overrides or {}))
    token = api.CancelToken()
    spec = method_spec(method, settings, clip=clip, cancel=token, label=p.name)
    return run_spec(spec, inputs, output, dry_run=dry_run, overwrite=overwrite, progress=progress, out=out,
                    masks=masks, cancel=token, preset=p.name, protect=(p.path,) if p.path is not None else ())


def run_spec(
    spec: BatchSpec,
    inputs: list[str],
    output: str | os.PathLike,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    out: TextIO | None = None,
    masks: str | os.PathLike | None = None,
    cancel: api.CancelToken | None = None,
    preset: str | None = None,
    protect: tuple[str | os.PathLike, ...] = (),
) -> int:
    """The batch loop every surface shares; returns the exit status (0 ok, 1 some files failed, 130 interrupted).

    ``cancel``: the token ``spec.run_one`` passes to its runs, set on Ctrl-C so the run in flight stops too.
    ``protect``: files no output may replace besides the inputs and masks (the preset file). Everything that could
    stop the run is checked before any work; then the output folder is locked for the run (``OutputLock``)."""
    out = out or sys.stderr  # looked up per call: tests and wrappers swap sys.stderr
    output = Path(output)
    exts = IMAGE_EXTS if spec.image_input else TEXT_EXTS
    if masks is not None and not spec.takes_mask:
        raise ParameterError(f"method '{spec.method}' takes no mask; drop --masks")
    if masks is not None and not Path(masks).is_dir():
        raise ParameterError(f"--masks {masks}: no such folder")
    if masks is not None and output.resolve() == Path(masks).resolve():
        raise ParameterError(f"--output {output} is the --masks folder: the outputs would replace the masks; choose "
                             "another output folder (masks are never written over, even with --overwrite)")
    files = expand_inputs(inputs, exts)
    if not files:
        raise ParameterError(f"no inputs found in {', '.join(inputs)} (looking for {', '.join(exts)} files)")
    extra = tuple(Path(p) for p in protect if p is not None)
    guarded = (*(p for p in Path(masks).iterdir() if p.is_file()), *extra) if masks is not None else extra
    check_output_dir(output, create=not dry_run)
    if dry_run:
        return _dry_run(spec, plan(spec, files, output, overwrite, guarded), out, preset)
    try:
        lock = OutputLock(output, "clipkit batch").acquire()
    except OSError as e:
        raise ParameterError(f"cannot lock the output folder {output}: {e.strerror or e}") from e
    try:  # planned under the lock: what another job wrote before it is seen
        return _run_jobs(spec, plan(spec, files, output, overwrite, guarded), output, out, masks, cancel, preset,
                         progress, extra)
    finally:
        lock.release()


def _dry_run(spec: BatchSpec, jobs: list[Job], out: TextIO, preset: str | None) -> int:
    """List what a run would do; write nothing."""
    todo = [j for j in jobs if j.status == "todo"]
    for j in jobs:
        verb = {"todo": "run ", "done": "skip", "conflict": "FAIL"}[j.status]
        note = {"done": "  (done, same settings)",
                "conflict": "  (exists with other settings; --overwrite to redo)"}.get(j.status, "")
        print(f"{verb} {j.input} -> {_names(j)}{note}", file=out)
    what = f"preset {preset} ({spec.method})" if preset else spec.method
    print(f"dry run: {len(todo)} to run, {len(jobs) - len(todo)} already there; {what}; nothing written", file=out)
    return 0


def _run_jobs(spec: BatchSpec, jobs: list[Job], output: Path, out: TextIO, masks: str | os.PathLike | None,
              cancel: api.CancelToken | None, preset: str | None, progress: bool,
              protect: tuple[Path, ...]) -> int:
    """Run the planned jobs (the output folder is locked): one failing input is logged and the run goes on.
    ``protect``: files besides each job's input and mask that no write may replace (the preset)."""
    label = spec.label or spec.method
    now = time.time_ns()  # one reading for both parts: names sort in start order even across a second's edge
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now // 10**9))
    log = _Log(output / f"batch-{stamp}-{now % 10**9:09d}-{os.getpid()}.jsonl")
    log.write(event="start", preset=preset, method=spec.method, settings=spec.want, inputs=len(jobs),
              output=str(output), argv=sys.argv[1:])
    counts = {"done": 0, "skipped": 0, "failed": 0}
    failures: list[tuple[Path, str]] = []
    started = time.perf_counter()
    try:
        for j in tqdm(jobs, desc=f"batch {spec.method}", unit="file", disable=not progress, file=out):
            row: dict[str, Any] = {"event": "file", "input": str(j.input), "output": str(j.outputs[0])}
            if len(j.outputs) > 1:
                row["outputs"] = [str(o) for o in j.outputs]
            if j.status == "done":
                counts["skipped"] += 1
                log.write(**row, status="skipped", reason="output exists with the same settings")
                continue
            if j.status == "conflict":
                msg = f"{_names(j)} exists with other settings; pass --overwrite or choose another --output"
                counts["failed"] += 1
                failures.append((j.input, msg))
                log.write(**row, status="failed", error=msg)
                continue
            t0 = time.perf_counter()
            try:
                kwargs: dict[str, Any] = {}
                if spec.image_input:
                    kwargs[spec.image_input] = j.input
                    mask = Path(masks) / f"{j.input.stem}.png" if masks is not None else None
                    if mask is not None and mask.is_file():
                        kwargs["mask"] = mask
                        row["mask"] = str(mask)
                else:
                    kwargs[spec.text_field] = _read_text(j.input)
                result = spec.run_one(**kwargs)
                if result.record.get("cancelled"):
                    raise KeyboardInterrupt
                if spec.on_result is not None:
                    spec.on_result(j, result)
                if len(result.images) != len(j.outputs):
                    raise RuntimeError(f"the run returned {len(result.images)} images for {len(j.outputs)} outputs")
                guard = (j.input, *([kwargs["mask"]] if "mask" in kwargs else []), *protect)  # checked again at write
                for i, path in enumerate(j.outputs):
                    result.save(path, index=i, protect=guard)
            except ClipKitError as e:
                counts["failed"] += 1
                failures.append((j.input, str(e)))
                log.write(**row, status="failed", error=str(e), seconds=round(time.perf_counter() - t0, 3))
                continue
            except Exception as e:  # any failure of one input (a broken file raises anything) costs that input only
                counts["failed"] += 1
                failures.append((j.input, f"{type(e).__name__}: {e}"))
                log.write(**row, status="failed", error=f"{type(e).__name__}: {e}",
                          traceback=traceback.format_exc(limit=5), seconds=round(time.perf_counter() - t0, 3))
                continue
            counts["done"] += 1
            log.write(**row, status="done", seconds=round(time.perf_counter() - t0, 3),
                      timings=result.record.get("timings"), final=result.record.get("final"),
                      steps_done=result.record.get("steps_done"))
    except KeyboardInterrupt:
        if cancel is not None:
            cancel.cancel()
        log.write(event="summary", **counts, interrupted=True, seconds=round(time.perf_counter() - started, 3))
        log.close()
        print(f"interrupted: {counts['done']} done, {counts['skipped']} skipped; rerun the same command to "
              f"resume (log: {log.path})", file=out)
        return 130
    seconds = time.perf_counter() - started
    log.write(event="summary", **counts, seconds=round(seconds, 3),
              failures=[{"input": str(i), "error": e} for i, e in failures])
    log.close()
    print(f"batch {label}: {counts['done']} done, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed in {seconds:.1f} s — log {log.path}", file=out)
    for path, err in failures:
        print(f"  FAILED {path}: {err}", file=out)
    return 1 if failures else 0
