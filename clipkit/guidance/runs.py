"""What every method's optimisation loop shares: progress, cancellation, timing and the result record.

Methods differ in what they optimise; they should not differ in how a user watches, stops or reproduces
a run. A method hands `run_steps` a function doing one step; `run_steps` calls the progress callback
(Gradio, tqdm, a test), honours a cancel token between steps, and records per-step loss values.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from clipkit.guidance.errors import ParameterError


@dataclass
class StepInfo:
    """What a progress callback sees after each step."""

    step: int
    total: int
    values: dict[str, float]
    preview: torch.Tensor | None = None


StepCallback = Callable[[StepInfo], None]


class CancelToken:
    """Thread-safe flag a UI sets to stop a run after the current step (the partial result is kept)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunResult:
    """A method's output: images (B, 3, H, W) in [0, 1] plus the record needed to trust and reproduce it."""

    images: torch.Tensor
    settings: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    # typed results the next method can take (a trained network, a latent ...): name -> Artifact
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self):
        """The first image as PIL, for the app and the API."""
        from clipkit.guidance.images import tensor_to_pil

        return tensor_to_pil(self.images)

    @classmethod
    def from_loop(
        cls,
        images: torch.Tensor,
        settings: dict[str, Any],
        history: list[dict[str, float]],
        seconds: float,
        cancelled: bool,
        load_s: float = 0.0,
        extras: dict[str, Any] | None = None,
        artifacts: dict[str, Any] | None = None,
    ) -> RunResult:
        """The result of an optimisation loop, with the timings every method reports."""
        timings = {"load_s": load_s, "optimise_s": seconds, "s_per_step": seconds / max(1, len(history))}
        return cls(images, settings, history, timings, cancelled, extras or {}, artifacts or {})

    def record(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-ready: embedded in the PNG and written to manifests."""
        last = self.history[-1] if self.history else {}
        record = {
            "settings": self.settings,
            "final": last,
            "steps_done": len(self.history),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "cancelled": self.cancelled,
        }
        if self.artifacts:
            record["artifacts"] = {name: a.describe() for name, a in self.artifacts.items()}
        return record


S = TypeVar("S")


_INIT_LOCK = threading.RLock()


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a network reproducibly from ``seed``: torch's layer initialisers draw from the global RNG, so the
    seed-and-build holds a process-wide lock (brief: construction only) and restores the global state after.
    Everything else a run draws comes from its own ``torch.Generator``, so runs in threads never share draws."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def model_loading() -> Iterator[None]:
    """Hold the construction lock while a model is built and loaded from a file: its throwaway random init draws
    from the global RNG too, and must not interleave with a ``seeded_init`` in another thread (the app runs jobs
    in threads, and a first run loads its models while another run builds its network)."""
    with _INIT_LOCK:
        yield


SEED_RANGE = 1 << 63  # torch.Generator.manual_seed takes a signed 64-bit integer
RANDOM_SEED = -1


def resolve_seed(seed: Any) -> int:
    """The one seed policy: -1 (or None) draws a random seed from ``os.urandom``; any other integer, however
    large or negative, is reduced into the generator's range the same way (modulo 2**63). The result is what a
    run uses and records, so the run reproduces from its record."""
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed == RANDOM_SEED):
        return int.from_bytes(os.urandom(8), "little") % SEED_RANGE
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"seed must be an integer (-1 for a random one), got {type(seed).__name__} {seed!r}")
    return seed % SEED_RANGE


def image_generators(seed: int, count: int) -> tuple[list[int], list[torch.Generator]]:
    """Seeds ``seed .. seed + count - 1`` (in the seed range) and a generator for each: image i of a batch draws
    only from its own, so it re-runs alone as a batch of one with seed ``seed + i``."""
    seeds = [(seed + i) % SEED_RANGE for i in range(count)]
    return seeds, [torch.Generator().manual_seed(v) for v in seeds]


def randn_per_image(gens: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """(len(gens), *shape) normal draws, row i from ``gens[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens])


def with_seed(settings: S) -> S:
    """``settings`` with its ``seed`` field (if it has one) resolved by ``resolve_seed``; others unchanged."""
    if is_dataclass(settings) and any(f.name == "seed" for f in fields(settings)):
        seed = resolve_seed(settings.seed)
        if seed != settings.seed:
            settings = replace(settings, seed=seed)
    return settings


def resolve_settings(cls: type[S], settings: S | None, overrides: dict[str, Any]) -> S:
    """A method's settings: the given (or default) dataclass with keyword overrides, validated, its seed resolved
    (``resolve_seed``).

    Unknown keywords are named with the valid ones, instead of a bare TypeError from the dataclass.
    """
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ParameterError(f"unknown setting(s) {unknown} for {cls.__name__}; valid: {', '.join(valid)}")
    base = asdict(settings) if settings is not None else {}
    values = {**base, **overrides}
    if "seed" in valid and "seed" in values:
        values["seed"] = resolve_seed(values["seed"])
    return with_seed(cls(**values).validate())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds): for load times in result records."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def check_steps(steps: int, limit: int = 100_000) -> int:
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ParameterError(f"steps={steps!r} must be an integer in 1..{limit}")
    return steps


def run_steps(
    steps: int,
    step_fn: Callable[[int], dict[str, float]],
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    preview_fn: Callable[[], torch.Tensor] | None = None,
    preview_every: int = 10,
    progress: bool = True,
    desc: str = "",
) -> tuple[list[dict[str, float]], bool, float]:
    """Run `step_fn(i)` for i in range(steps); returns (history, cancelled, seconds)."""
    check_steps(steps)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    cancelled = False
    try:
        for i in range(steps):
            if cancel is not None and cancel.cancelled:
                cancelled = True
                break
            values = step_fn(i)
            history.append(values)
            bar.update(1)
            if "loss" in values:
                bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
            if callback is not None:
                last = i == steps - 1
                preview = preview_fn() if preview_fn is not None and (last or i % preview_every == 0) else None
                callback(StepInfo(i + 1, steps, values, preview))
    finally:
        bar.close()
    return history, cancelled, time.perf_counter() - start


def training_accelerator():
    """accelerate's Accelerator for a trainer: GPUs where there are any, else the CPU, where processes started by
    ``torchrun`` join one data-parallel run (gloo).  Without ``cpu=True`` accelerate gives each CPU process a
    one-process state, so they would each train alone (measured)."""
    from accelerate import Accelerator

    gpu = torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    return Accelerator(cpu=not gpu)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], str]:
    """An optimizer's state as flat tensors (``{prefix}.{param index}.{name}``) plus its param groups as JSON:
    what a safetensors training checkpoint needs for an exact resume (no pickle)."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": (v if isinstance(v, torch.Tensor) else torch.tensor(v)).detach().contiguous()
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, json.dumps(sd["param_groups"])


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: str) -> None:
    """Restore what `optimizer_tensors` wrote (other keys in `tensors` are ignored)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            i, k = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> Path:
    """`tensors` as safetensors at `path`, written to a hidden temporary file beside it (a unique name, so two
    writers never share one) and moved over it, so an interrupted save never leaves a half file nor replaces a good
    one; stale temporary files of killed writes are cleaned (``files.atomic_target``)."""
    from safetensors.torch import save_file

    from clipkit.guidance.files import atomic_target

    path = Path(path)
    with atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def save_training_checkpoint(path: Path, fmt: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                             meta: dict[str, str], extra: dict[str, torch.Tensor] | None = None) -> None:
    """Model, optimiser and `extra` tensors plus string metadata (``format`` = `fmt`) in one safetensors file,
    written beside `path` and moved over it, so an interrupted save never leaves a half checkpoint."""
    opt_tensors, groups = optimizer_tensors(opt, "opt")
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors, **(extra or {})}
    save_safetensors({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, path,
                     {"format": fmt, **meta, "opt_groups": groups})


def load_training_checkpoint(path: Path, fmt: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                             mismatch: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Restore what `save_training_checkpoint` wrote -> (metadata, the `extra` tensors). A file of another
    format stops the program with `mismatch` (what to do instead), before any tensor is read."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise SystemExit(f"{path} {mismatch} (format {meta.get('format', 'none')!r}, want {fmt!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer(opt, tensors, "opt", meta["opt_groups"])
    return meta, {k: v for k, v in tensors.items() if not k.startswith(("model.", "opt."))}
