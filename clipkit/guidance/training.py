"""One training loop for every trainer: progress, cancel, per-step callbacks, a JSON-lines log, checkpoints at a
cadence and whenever the run stops early, a time budget, SIGTERM / Ctrl-C as a clean stop, and several processes.

A trainer is any object with ``step`` (steps done), ``train_step() -> values`` and ``save(folder)`` (everything a
resume needs, plus the artifact the apply-method takes). Resuming is the trainer's own constructor from its saved
checkpoint; the loop then continues from ``trainer.step``, so a resumed run takes the same steps as one straight run.

Several processes (accelerate, ``torchrun``) each run ``fit`` on their share of the batch: the caller passes its
``Accelerator`` in (the core imports no launcher). Only the main process saves, logs, shows progress and calls back;
the stop (time budget, cancel, signal) is agreed by all before each step, so they all stop after the same step.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from clipkit.guidance.runs import CancelToken, StepCallback, StepInfo

LogLine = Callable[[int, dict[str, Any], float], dict[str, Any]]


class Trainable(Protocol):
    step: int

    def train_step(self) -> dict[str, Any]: ...

    def save(self, folder: Path) -> Path: ...


@dataclass
class Steps:
    """A trainer made of functions, for a loop whose state lives in its function: ``run(i)`` takes step ``i``
    (counted from 0) and returns its values; ``save_fn(folder, steps_done)`` writes what a resume needs."""

    run: Callable[[int], dict[str, Any]]
    save_fn: Callable[[Path, int], Path] | None = None
    step: int = 0

    def train_step(self) -> dict[str, Any]:
        values = self.run(self.step)
        self.step += 1
        return values

    def save(self, folder: Path) -> Path:
        if self.save_fn is None:
            raise ValueError("these steps save nothing: call fit without a folder")
        return self.save_fn(folder, self.step)


class Processes(Protocol):
    """What ``fit`` uses of an accelerate ``Accelerator``."""

    is_main_process: bool
    num_processes: int
    device: Any

    def reduce(self, tensor: torch.Tensor, reduction: str = ...) -> torch.Tensor: ...


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
    signal: int | None = None  # the SIGTERM / SIGINT that stopped it (``stop_signals=True``)


def agreed_max(accelerator: Processes | None, *values: float) -> list[float]:
    """Each value maxed over the processes (unchanged with one): what every process must decide alike on, such as
    a clock (each process's own would let them stop, or anneal a rate, at different steps)."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, "max").tolist()


@contextmanager
def _stop_signals(enabled: bool) -> Iterator[dict[str, int]]:
    """While inside: SIGTERM and SIGINT only note themselves (``{"signal": n}``) so the loop can end after the step
    and save, instead of dying mid-step (a batch job's time limit, Ctrl-C). Handlers can only be set from the main
    thread; elsewhere (the app's worker threads) signals keep their usual effect."""
    seen: dict[str, int] = {}

    def note(signum: int, _frame: Any) -> None:
        seen.setdefault("signal", signum)

    old: dict[int, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield seen
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _should_stop(result: FitResult, elapsed: float, max_seconds: float | None, cancel: CancelToken | None,
                 seen: dict[str, int], accelerator: Processes | None, agree: bool) -> bool:
    """Whether to stop before the next step, and why (into ``result``); the same on every process when ``agree``."""
    flags = [elapsed, float(cancel is not None and cancel.cancelled), float(seen.get("signal", 0))]
    if agree:
        flags = agreed_max(accelerator, *flags)
    elapsed, cancelled, signum = flags
    result.cancelled = bool(cancelled)
    result.out_of_time = max_seconds is not None and elapsed > max_seconds
    result.signal = int(signum) or None
    return result.cancelled or result.out_of_time or result.signal is not None


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
    log_every: int = 1,
    log_line: LogLine | None = None,
    mininterval: float = 0.1,
    stop_signals: bool = False,
    accelerator: Processes | None = None,
    gather: Callable[[], None] | None = None,
) -> FitResult:
    """Train until ``trainer.step == end``, a cancel, ``max_seconds`` or (``stop_signals``) SIGTERM / SIGINT; saves
    into ``folder`` every ``every`` steps and at the stop (so a cancelled or timed-out run keeps what it learnt and
    resumes from there). Every ``log_every``-th step's values go to ``folder / log`` as a JSON line, by default
    ``{"step", **values, "seconds"}``, else ``log_line(step, values, seconds)`` (``log=None``: no log).

    With ``accelerator`` only its main process saves, logs, shows the bar and calls ``callback``; ``gather`` runs
    on every process just before each save, the point where all meet (e.g. to sum their CPU time into it)."""
    out = Path(folder) if folder is not None else None
    main = accelerator is None or accelerator.is_main_process
    agree = accelerator is not None and (max_seconds is not None or cancel is not None or stop_signals)
    result = FitResult(trainer.step, trainer.step)
    log_file = None
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        log_file = (out / log).open("a", encoding="utf-8") if log is not None else None
    bar = tqdm(total=end, initial=trainer.step, disable=not (progress and main), desc=desc, dynamic_ncols=True,
               mininterval=mininterval)
    started = time.perf_counter()
    saved_at = trainer.step

    def save() -> None:
        nonlocal saved_at
        if gather is not None:
            gather()
        if main:
            trainer.save(out)
        saved_at = trainer.step

    try:
        with _stop_signals(stop_signals) as seen:
            while trainer.step < end:
                if _should_stop(result, time.perf_counter() - started, max_seconds, cancel, seen, accelerator,
                                agree):
                    break
                t0 = time.perf_counter()
                values = dict(trainer.train_step())
                took = time.perf_counter() - t0
                result.history.append(values)
                result.step_seconds.append(took)
                bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()
                                 if k in shown}, refresh=False)
                bar.update(1)
                if log_file is not None and trainer.step % log_every == 0:
                    line = log_line(trainer.step, values, took) if log_line is not None else {
                        "step": trainer.step, **values, "seconds": round(took, 4)}
                    log_file.write(json.dumps(line, default=str) + "\n")
                    log_file.flush()
                if callback is not None and main:
                    callback(StepInfo(trainer.step, end, {k: v for k, v in values.items() if isinstance(v, float)}))
                if out is not None and trainer.step % every == 0:
                    save()
            if out is not None and trainer.step != saved_at:
                save()  # the last steps, or what a stopped run learnt
            result.signal = result.signal or seen.get("signal")  # one that came during the last step
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    result.end_step = trainer.step
    result.seconds = time.perf_counter() - started
    return result
