"""Folder batches for the style methods: resumable, atomic, and never touching the inputs.

Each input ``X.jpg`` becomes ``OUT/X.png`` carrying its job (method + settings) as embedded JSON. On a rerun an
output holding the same job is skipped, so an interrupted batch resumes where it stopped; one made with other
settings stops the batch unless ``overwrite``. Writes go through `guidance.images.save_image` (temp file +
rename, inputs protected), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from guidance.errors import ParameterError
from guidance.images import load_image, plan_outputs, read_settings, save_image
from guidance.runs import RunResult

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped (already done)"


def list_inputs(path: str | os.PathLike) -> list[Path]:
    """A single image file, or the images directly inside a folder (sorted, not recursive)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ParameterError(f"input {path} is neither an image file nor a folder")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _canonical(job: dict[str, Any]) -> str:
    return json.dumps(job, sort_keys=True, default=str)


def run_batch(
    inputs: str | os.PathLike | list[Path],
    out_dir: str | os.PathLike,
    job: dict[str, Any],
    run_one: Callable[[Any, Path], RunResult],
    overwrite: bool = False,
    progress: bool = True,
    after_each: Callable[[Path, Path, RunResult], None] | None = None,
) -> BatchReport:
    """Run `run_one(image, input_path)` for every input not already done with this `job`."""
    files = list_inputs(inputs) if not isinstance(inputs, list) else inputs
    out_dir = Path(out_dir)
    src_dirs = {p.parent.resolve() for p in files}
    if out_dir.resolve() in src_dirs:
        raise ParameterError("the output folder must differ from the input folder (inputs are never overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    pairs = plan_outputs(files, out_dir)
    for src, dst in tqdm(pairs, desc=job.get("method", "style"), unit="img", disable=not progress):
        if dst.exists():
            old = read_settings(dst).get("job")
            if old is not None and _canonical(old) == _canonical(job):
                report.skipped.append(dst)
                continue
            if not overwrite:
                raise ParameterError(f"{dst} exists with other settings; pass --overwrite or another output folder")
        result = run_one(load_image(src), src)
        meta = {"job": job, "input": str(src), **result.record()}
        save_image(result.images, dst, meta, protect=tuple(files))
        if after_each is not None:
            after_each(src, dst, result)
        report.done.append(dst)
    return report
