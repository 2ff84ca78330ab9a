"""Train a world CLIP with open_clip's model factory and its ClipLoss.

    clipkit train world-clip --model world-guide --steps 6000 --seed 0 --out runs/world-guide
    clipkit train world-clip ... --resume          # continue from <out>/last.*
    torchrun --standalone --nproc_per_node 2 -m clipkit.world.train_clip ... --threads 1 --workers 0   # 2 CPU processes
    accelerate launch --multi_gpu -m clipkit.world.train_clip ...              # several GPUs (untested here)

Data are rendered on the fly (item i is a function of seed and i), so resuming
only needs the weights, the optimiser state and the step.  A checkpoint is one
safetensors file, <out>/last.safetensors: model and optimiser tensors, the
step and the clocks in its metadata (no pickle).  The final weights go to
world/models/<model>.safetensors in fp16 with exactly `model.state_dict()` keys.

The loop is the one every trainer uses (``clipkit.guidance.training.fit``,
driving a ``ClipRun``).  Processes go through accelerate (DDP): each renders
its share of every batch's hard-negative groups, and ClipLoss gathers the
features of all of them with their gradients, so the loss is the one over the
whole batch, as in one process.  The processes are for GPUs and machines with
more cores: on these 2 CPU cores, two one-thread processes trained the judge
at 2.41 batch-64 steps/s against 2.56 for one process with two threads (250
steps each).  On a CPU machine torchrun starts the processes (accelerate's own
launcher started one here) and accelerate runs them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from open_clip.loss import ClipLoss
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from clipkit.guidance.runs import (
    StepInfo,
    load_training_checkpoint,
    save_safetensors,
    save_training_checkpoint,
    training_accelerator,
)
from clipkit.guidance.training import agreed_max, fit
from clipkit.world.data import HardNegativeBatchSampler, WorldDataset
from clipkit.world.models import MODELS_DIR, create
from clipkit.world.scene import MAX_SHADE

if TYPE_CHECKING:
    from accelerate import Accelerator


def lr_at(step: int, total: int, base: float, warmup: int, progress: float = 0.0) -> float:
    """Linear warmup then cosine decay to 5 % of the base rate.

    `progress` (fraction of the time budget used) can push the decay ahead of
    the step count, so a run on busy shared cores still ends annealed on time.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), progress)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def save_fp16(model: torch.nn.Module, path: Path) -> None:
    """Write the state dict in fp16 safetensors (contiguous copies, no shared storage), atomically: the
    default target is the shipped weights, which an interrupted save must not leave half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in model.state_dict().items()}
    save_safetensors(sd, path, {"format": "pt"})


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (wall time lies on shared cores)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


CHECKPOINT_FORMAT = "world-clip-train/2"


def _save_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                     elapsed: float, cpu: float) -> None:
    save_training_checkpoint(out / "last.safetensors", CHECKPOINT_FORMAT, model, opt,
                             {"step": str(step), "elapsed": repr(elapsed), "cpu": repr(cpu)})


def _load_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float, float]:
    """Restore model and optimiser from <out>/last.safetensors -> (step, elapsed seconds, CPU seconds)."""
    meta, _ = load_training_checkpoint(out / "last.safetensors", CHECKPOINT_FORMAT, model, opt,
                                       "was written by an older trainer: start a new run (another --out), or "
                                       "--init from its weights")
    return int(meta["step"]), float(meta["elapsed"]), float(meta["cpu"])


def parse_weights(text: str) -> dict[str, float]:
    """"position=5,lighting=1.5" -> {"position": 5.0, "lighting": 1.5}."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return {k.strip(): float(v) for k, v in pairs}


def make_optimizer(model: torch.nn.Module, lr: float, wd: float, fused: bool = True) -> torch.optim.AdamW:
    """AdamW without decay on embeddings, gains and biases.

    `fused` runs the update as one kernel: on 2 CPU cores it is 6x faster than the per-tensor loop
    (bench/train_world_step.py), with the same update.
    """
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: ClipLoss, images: torch.Tensor,
               tokens: torch.Tensor, channels_last: bool = True, accelerator=None) -> torch.Tensor:
    """One ClipLoss step (clipped gradients, logit scale kept <= 100); returns the loss.

    `channels_last` lays out the images as CPU convolutions run fastest; the weights keep the usual layout,
    so gradients, optimiser state and checkpoints do too (a fused AdamW given a channels_last weight with
    contiguous state, as after a resume, updated it differently from the usual layout: measured).
    """
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    img_f, txt_f, scale = model(images, tokens)[:3]
    loss = loss_fn(img_f, txt_f, scale)
    opt.zero_grad(set_to_none=True)
    if accelerator is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    else:  # DDP averages the gradients of the processes
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        bare = accelerator.unwrap_model(model) if accelerator is not None else model
        bare.logit_scale.clamp_(0, math.log(100))
    return loss.detach()


class ClipRun:
    """A run as ``fit`` drives it: batches from the loader, the learning rate of the step (warmup, cosine, ahead
    of the steps when the time budget runs faster, on one clock for all processes), the checkpoint with the
    run's clocks and the evaluations."""

    def __init__(self, a: argparse.Namespace, model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: ClipLoss,
                 loader: DataLoader, acc: Accelerator, out: Path, tokenizer: Callable, step: int, elapsed: float,
                 cpu0: float) -> None:
        self.a, self.model, self.opt, self.loss_fn, self.acc, self.out = a, model, opt, loss_fn, acc, out
        self.bare, self.tokenizer, self.batches = acc.unwrap_model(model), tokenizer, iter(loader)
        self.step, self.cpu0, self.cpu = step, cpu0, cpu0
        self.t0, self.ema = time.time() - elapsed, None  # t0: when the run (all its segments) began

    def train_step(self) -> dict[str, float]:
        a = self.a
        images, tokens = next(self.batches)
        budget = 0.0
        if a.max_minutes:  # the same schedule everywhere: the slowest process's clock
            budget = agreed_max(self.acc, (time.time() - self.t0) / 60 / a.max_minutes)[0]
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, a.steps, a.lr, a.warmup, budget)
        loss = train_step(self.model, self.opt, self.loss_fn, images.to(self.acc.device), tokens.to(self.acc.device),
                          accelerator=self.acc).item()
        self.step += 1
        self.ema = loss if self.ema is None else 0.98 * self.ema + 0.02 * loss
        return {"loss": loss, "loss_ema": self.ema, "scale": self.bare.logit_scale.exp().item()}

    def gather(self) -> None:
        """CPU seconds of every process so far (a collective: all processes call it at the same step)."""
        mine = torch.tensor([cpu_seconds()], dtype=torch.float64, device=self.acc.device)
        self.cpu = self.cpu0 + float(self.acc.reduce(mine, "sum") if self.acc.num_processes > 1 else mine)

    def save(self, folder: Path) -> Path:
        _save_checkpoint(self.out, self.bare, self.opt, self.step, time.time() - self.t0, self.cpu)
        return self.out / "last.safetensors"

    def evaluate(self, info: StepInfo) -> None:
        """Every ``--eval-every`` steps and at the last: the world evaluation, printed and kept in evals.jsonl."""
        if info.step % self.a.eval_every and info.step != self.a.steps:
            return
        from clipkit.world.eval_clip import evaluate

        self.bare.eval()
        res = evaluate(self.bare, self.tokenizer, n_scenes=128, n_retrieval=128)
        self.bare.train()
        minutes = (time.time() - self.t0) / 60
        msg = " ".join(f"{k}={v:.3f}" for k, v in res.items())
        print(f"\n[step {info.step} {minutes:.1f} min] loss {self.ema:.3f} {msg}", flush=True)
        with open(self.out / "evals.jsonl", "a") as f:
            f.write(json.dumps({"step": info.step, "minutes": minutes, **res}) + "\n")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world-guide")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--group-size", type=int, default=4, help="hard-negative group size (1 = none)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--final", type=Path, default=None, help="fp16 weights (default world/models/<model>)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="wall-clock budget: the schedule anneals and training stops by then (0 = none)")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (fine-tuning: new optimiser, step 0)")
    p.add_argument("--vary", default="", help="hard-negative weights to change, e.g. position=5,lighting=1.5")
    p.add_argument("--noise", type=float, default=0.02, help="largest std of per-image Gaussian pixel noise")
    p.add_argument("--free-colour", type=float, default=0.0,
                   help="fraction of groups whose objects get unnamed off-palette colours")
    p.add_argument("--shade", type=float, default=0.0,
                   help=f"radius of random RGB shades of the named colours (training groups; <= {MAX_SHADE})")
    p.add_argument("--oversize", type=float, default=0.0,
                   help="fraction of groups whose large single objects are drawn 1.3-2x larger (may leave the frame)")
    p.add_argument("--rotate", type=float, default=0.0,
                   help="fraction of groups whose objects are turned by a random angle (shapes at any rotation)")
    p.add_argument("--easy", type=float, default=0.0,
                   help="curriculum: starting fraction of groups built on easy scenes (one object, plain, bright)")
    p.add_argument("--easy-steps", type=int, default=0,
                   help="steps over which the easy fraction falls linearly to 0 (0 = constant)")
    a = p.parse_args(argv)

    acc = training_accelerator()
    main_proc, world = acc.is_main_process, acc.num_processes
    out = a.out or Path("runs") / a.model
    out.mkdir(parents=True, exist_ok=True)
    final = a.final or MODELS_DIR / f"{a.model}.safetensors"
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    torch.manual_seed(a.seed)

    model, _, tokenizer = create(a.model)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, a.lr, a.wd)
    step, elapsed, cpu0 = 0, 0.0, 0.0
    resuming = a.resume and (out / "last.safetensors").exists()
    if a.init is not None and not resuming:
        model.load_state_dict({k: v.float() for k, v in load_file(str(a.init)).items()})
        print(f"initialised from {a.init}", flush=True)
    if resuming:
        step, elapsed, cpu0 = _load_checkpoint(out, model, opt)
        print(f"resumed from {out} at step {step}", flush=True)
    if main_proc:
        (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()} | {"processes": world},
                                                  indent=1))
    model, opt = acc.prepare(model, opt)
    bare = acc.unwrap_model(model)

    ds = WorldDataset(tokenizer, seed=a.seed, group_size=a.group_size,
                      length=(a.steps + 1) * a.batch_size, free_colour=a.free_colour,
                      noise=a.noise, vary_weights=parse_weights(a.vary), easy=a.easy, shade=a.shade,
                      oversize=a.oversize, rotate=a.rotate, easy_groups=a.easy_steps * a.batch_size // a.group_size)
    sampler = HardNegativeBatchSampler(ds, a.batch_size, start=step, rank=acc.process_index, world=world)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=a.workers, worker_init_fn=_worker_init,
                        persistent_workers=False, prefetch_factor=4 if a.workers else None)
    # with several processes: the loss over the whole batch (features gathered with their gradients)
    loss_fn = ClipLoss(gather_with_grad=world > 1, rank=acc.process_index, world_size=world)
    if main_proc:
        print(f"{a.model}: {n_params / 1e6:.2f} M params, steps {step}->{a.steps}, {world} process(es)", flush=True)
    model.train()
    run = ClipRun(a, model, opt, loss_fn, loader, acc, out, tokenizer, step, elapsed, cpu0)
    fit(run, a.steps, out, every=a.ckpt_every, desc=a.model, shown=("loss_ema", "scale"), mininterval=5,
        max_seconds=a.max_minutes * 60 - elapsed if a.max_minutes else None, accelerator=acc, gather=run.gather,
        callback=run.evaluate if a.eval_every else None)
    run.gather()
    minutes = (time.time() - run.t0) / 60
    if main_proc:
        save_fp16(bare, final)
        (out / "done.json").write_text(json.dumps({"steps": run.step, "minutes": minutes, "cpu_minutes": run.cpu / 60,
                                                   "params": n_params, "processes": world}))
        print(f"done: {run.step} steps in {minutes:.1f} min -> {final} ({final.stat().st_size / 1e6:.1f} MB)",
              flush=True)
    acc.end_training()


if __name__ == "__main__":
    main()
