"""One training loop for every trainer: progress, cancel, per-step callbacks, a JSON-lines log, checkpoints at a
cadence and whenever the run stops early, and a time budget.

A trainer is any object with ``step`` (steps done), ``train_step() -> values`` and ``save(folder)`` (everything a
resume needs, plus the artifact the apply-method takes). Resuming is the trainer's own constructor from its saved
checkpoint; the loop then continues from ``trainer.step``, so a resumed run takes the same steps as one straight run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from clipkit.guidance.runs import CancelToken, StepCallback, StepInfo


class Trainable(Protocol):
    step: int

    def train_step(self) -> dict[str, Any]: ...

    def save(self, folder: Path) -> Path: ...


@dataclass
class FitResult:
    """What a call of ``fit`` did: the values of each step it ran, and why it stopped."""

    start_step: int
    end_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    out_of_time: bool = False


def fit(
    trainer: Trainable,
    end: int,
    folder: str | Path | None = None,
    *,
    every: int = 100,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
    desc: str = "train",
    shown: tuple[str, ...] = ("loss",),
    log: str | Path | None = "log.jsonl",
) -> FitResult:
    """Train until ``trainer.step == end``, a cancel, or ``max_seconds``; saves into ``folder`` every ``every``
    steps and at the stop (so a cancelled or timed-out run keeps what it learnt and resumes from there). Each
    step's values go to ``folder / log`` as JSON lines (``log=None``: no log)."""
    out = Path(folder) if folder is not None else None
    result = FitResult(trainer.step, trainer.step)
    log_file = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_file = (out / log).open("a", encoding="utf-8") if log is not None else None
    bar = tqdm(total=end, initial=trainer.step, disable=not progress, desc=desc, dynamic_ncols=True)
    started = time.perf_counter()
    saved_at = trainer.step
    try:
        while trainer.step < end:
            if cancel is not None and cancel.cancelled:
                result.cancelled = True
                break
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                result.out_of_time = True
                break
            t0 = time.perf_counter()
            values = dict(trainer.train_step())
            took = time.perf_counter() - t0
            result.history.append(values)
            result.step_seconds.append(took)
            bar.update(1)
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items() if k in shown})
            if log_file is not None:
                log_file.write(json.dumps({"step": trainer.step, **values, "seconds": round(took, 4)}, default=str)
                               + "\n")
            if callback is not None:
                callback(StepInfo(trainer.step, end, {k: v for k, v in values.items() if isinstance(v, float)}))
            if out is not None and trainer.step % every == 0:
                trainer.save(out)
                saved_at = trainer.step
        if out is not None and trainer.step != saved_at:
            trainer.save(out)  # the last steps, or what a stopped run learnt
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    result.end_step = trainer.step
    result.seconds = time.perf_counter() - started
    return result
