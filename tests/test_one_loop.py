"""The one training loop (``clipkit.guidance.training.fit``) as the world trainers and the StyleCLIP mapper use it:
SIGTERM ends a run cleanly, several processes stop at the same step with only the main one writing, a StyleGAN
segment ended by a signal resumes exactly, and the mapper's progress previews."""

from __future__ import annotations

import json
import os
import signal

import torch
from safetensors.torch import load_file

from clipkit import api
from clipkit.guidance.runs import CancelToken
from clipkit.guidance.training import Steps, fit
from clipkit.methods.stylegan.checkpoints import save_generator
from clipkit.methods.stylegan.network import Generator
from clipkit.world import train_stylegan

TINY_ARGS = ["--size", "16", "--style-dim", "32", "--channels", "4:16,8:16,16:8", "--batch", "4", "--r1-every", "2",
             "--log-every", "1", "--sample-every", "0", "--latent-avg-n", "64", "--no-progress"]


def counting_steps(saves: list[int], on_step=None) -> Steps:
    def run(i: int) -> dict[str, float]:
        if on_step is not None:
            on_step(i)
        return {"loss": float(i)}

    def save(folder, done: int):
        saves.append(done)
        return folder

    return Steps(run, save)


def test_sigterm_finishes_the_step_saves_and_restores_the_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    saves: list[int] = []
    steps = counting_steps(saves, lambda i: os.kill(os.getpid(), signal.SIGTERM) if i == 2 else None)
    done = fit(steps, 10, tmp_path, every=100, progress=False, stop_signals=True)
    assert done.signal == signal.SIGTERM and done.end_step == 3 and saves == [3]
    assert not done.cancelled and not done.out_of_time
    assert signal.getsignal(signal.SIGTERM) is before


class OtherProcess:
    """A non-main process of two whose partner reports ``partner`` (elapsed seconds, cancelled, signal) to the
    agreement; reductions are maxima, as ``fit`` asks for."""

    is_main_process, num_processes, device = False, 2, torch.device("cpu")

    def __init__(self, partner_at: int, steps: Steps) -> None:
        self.partner_at, self.steps, self.reductions = partner_at, steps, 0

    def reduce(self, tensor: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        assert reduction == "max"
        self.reductions += 1
        partner = torch.tensor([0.0, 0.0, 0.0], dtype=tensor.dtype)
        if self.steps.step >= self.partner_at:
            partner[0] = 1e9  # the partner's clock ran out
        return torch.maximum(tensor, partner)


def test_a_non_main_process_stops_with_the_others_and_writes_nothing(tmp_path):
    saves: list[int] = []
    gathered: list[int] = []
    calls: list[int] = []
    steps = counting_steps(saves)
    acc = OtherProcess(5, steps)
    done = fit(steps, 100, tmp_path / "run", every=2, max_seconds=3600, accelerator=acc, progress=False,
               callback=lambda info: calls.append(info.step), gather=lambda: gathered.append(steps.step))
    assert done.out_of_time and done.end_step == 5 and acc.reductions == 6  # one agreement before each step
    assert gathered == [2, 4, 5] and saves == [] and calls == []  # at every save point, but only main writes
    assert not (tmp_path / "run").exists()
    main_saves: list[int] = []
    fit(counting_steps(main_saves), 3, tmp_path / "solo", every=2, progress=False)  # no accelerator: it saves
    assert main_saves == [2, 3] and len((tmp_path / "solo" / "log.jsonl").read_text().splitlines()) == 3


def test_cancel_and_log_every(tmp_path):
    token = CancelToken()
    steps = counting_steps([], lambda i: token.cancel() if i == 5 else None)
    done = fit(steps, 100, tmp_path, every=100, cancel=token, log_every=2, progress=False,
               log_line=lambda step, values, s: {"at": step})
    assert done.cancelled and done.end_step == 6
    assert [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()] == [{"at": 2}, {"at": 4},
                                                                                          {"at": 6}]


def _g_ema(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("g_ema.")}


def test_a_stylegan_segment_ended_by_sigterm_is_written_and_resumes_exactly(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    args = TINY_ARGS + ["--steps", "4", "--every", "3"]
    train_stylegan.main(args + ["--out", str(a), "--model-out", str(a / "m.safetensors")])
    step = train_stylegan.Trainer.step

    def step_then_sigterm(self, i):
        values = step(self, i)
        if i == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return values

    monkeypatch.setattr(train_stylegan.Trainer, "step", step_then_sigterm)
    done = train_stylegan.main(args + ["--out", str(b), "--model-out", str(b / "m.safetensors")])
    assert done["steps"] == 2 and done["steps_this_segment"] == 2
    segment = json.loads((b / "segments.jsonl").read_text())
    assert segment["note"] == f"ended by signal {int(signal.SIGTERM)}" and segment["steps"] == 2
    assert load_file(str(b / "m.safetensors"))  # the model of the segment is written
    monkeypatch.setattr(train_stylegan.Trainer, "step", step)
    done = train_stylegan.main(args + ["--out", str(b), "--model-out", str(b / "m.safetensors"), "--resume"])
    assert done["steps"] == 4 and done["steps_this_segment"] == 2
    log = [json.loads(line) for line in (b / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and {"kimg", "s_per_step", "minutes"} <= set(log[0])
    ga, gb = _g_ema(a / "last.safetensors"), _g_ema(b / "last.safetensors")
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    rows = [json.loads(line) for line in (b / "segments.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "note" not in rows[1] and rows[1]["cpu_minutes"] >= rows[0]["cpu_minutes"]


def test_the_mapper_trains_in_fit_with_previews_and_cancel(tmp_path):
    g = Generator(16, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8}, seed=2).eval()
    g.set_latent_avg(g.mean_latent(64))
    path = str(save_generator(tmp_path / "tiny.safetensors", g))
    kw = dict(clip="tiny", generator=path, prompt="a red circle", optimizer="adam", id_lambda=0.0, preview_count=1,
              progress=False)
    seen = []
    done = api.run("styleclip_mapper_train", steps=3, callback=seen.append, **kw)
    assert [(i.step, i.total, i.preview is not None) for i in seen] == [(1, 3, True), (2, 3, False), (3, 3, True)]
    assert len(done.history) == 3 and "loss" in seen[0].values and not done.run.cancelled
    assert done.artifacts["mapper"].meta["steps_done"] == 3
    token = CancelToken()
    stopped = api.run("styleclip_mapper_train", steps=50, cancel=token,
                      callback=lambda info: token.cancel() if info.step == 2 else None, **kw)
    assert stopped.run.cancelled and len(stopped.history) == 2 and stopped.artifacts["mapper"].meta["steps_done"] == 2


def test_stylegan_as_two_processes_writes_once_and_continues(tmp_path):
    """torchrun with 2 CPU processes: the checkpoints' CPU-time collectives meet, only the main process logs and
    writes, and the same command continues the run with --resume."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "clipkit.world.train_stylegan", *TINY_ARGS, "--threads", "1", "--every", "2", "--out", str(out),
           "--model-out", str(out / "m.safetensors"), "--steps"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    for steps in ("3", "5"):
        extra = ["--resume"] if steps == "5" else []
        done = subprocess.run([*cmd, steps, *extra], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    rows = [json.loads(line) for line in (out / "segments.jsonl").read_text().splitlines()]
    assert [(r["steps"], r["processes"]) for r in rows] == [(3, 2), (5, 2)]
