"""Train the world StyleGAN2: a small StyleGAN2 of one-object world scenes at 64 px.

    python -m clipkit.world.train_stylegan --out RUN --threads 2 --max-minutes 50          # a first segment
    python -m clipkit.world.train_stylegan --out RUN --threads 2 --max-minutes 50 --resume # the next ones
    torchrun --standalone --nproc_per_node 2 -m clipkit.world.train_stylegan --out RUN --threads 1 ...  # 2 processes

The recipe is StyleGAN2's (Karras et al., CVPR 2020) at a small scale: the non-saturating logistic loss, lazy R1
regularisation of the discriminator on real images (``--r1-gamma`` every ``--r1-every`` steps, the penalty scaled
by the interval and Adam's rate and betas adjusted by interval / (interval + 1), as in the paper's appendix), no
path-length regulariser, style mixing (``--mixing``, per sample), an EMA of the generator's weights whose
half-life is NVIDIA's ``auto`` config, ``batch * 10 / 32`` kimg, ramped up over the first images (``ema_rampup``
0.05), and Adam with betas (0, 0.99), learning rate 0.002 for both networks (the port's default). Mapping depth 2
(StyleGAN3's small configs), ``lr_mlp`` 0.01. Optional DiffAugment (Zhao et al. 2020: ``--augment
translation,cutout``; no colour augmentation: the world's colours are its content). The data are unlimited, so
augmentation is off by default.

Data: one-object world scenes rendered on the fly (``clipkit.world.scene``): every shape, colour, size, position,
background pattern and colour and lighting, drawn by ``sample_scene(split="train", n_objects=1)``: the train split
the world CLIPs and the world LDM saw (the 12 held-out (shape, colour) pairs are never drawn), plain palette
colours, no pixel noise; 64 px, scaled to [-1, 1]. The renders of step i come from a generator seeded by
(seed, "data", i, rank), and every other draw of step i (latents, noise, mixing, augmentation) from one seeded by
(seed, "step", i, rank), so a resumed run is the uninterrupted run exactly: a checkpoint holds G, D, G_ema, both
Adam states and the step (safetensors, keys ``g.*``, ``d.*``, ``g_ema.*`` as in the port's training checkpoints).

Several processes (``torchrun`` on CPU, ``accelerate launch`` on GPUs) each render and draw their share of the
batch; their gradients are averaged by an all-reduce after each backward (``training_accelerator``'s process
group), so every process takes the same update. DDP's wrapper is not used: it expects every parameter of a module
to get a gradient in every backward, which the alternating G / D steps (D frozen in the G step) break.

``--max-minutes`` bounds this segment (this invocation), so the same command with ``--resume`` continues for
another segment; SIGTERM or Ctrl-C ends a segment the same way, after the current step (the loop is the one every
trainer uses, ``clipkit.guidance.training.fit``; ``Segment`` is its view of this trainer). At the end of each
segment the checkpoint, a grid of G_ema samples, ``done.json`` and the model are written: G_ema with
``latent_avg`` (the mean of ``--latent-avg-n`` mapped z), fp16, through
``clipkit.methods.stylegan.checkpoints.save_generator`` (``world/models/world-stylegan2.safetensors`` by default).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipkit.guidance.runs import StepInfo, load_optimizer, optimizer_tensors, save_safetensors, training_accelerator
from clipkit.guidance.training import Processes, fit
from clipkit.methods.stylegan.checkpoints import save_generator
from clipkit.methods.stylegan.discriminator import Discriminator
from clipkit.methods.stylegan.network import Generator
from clipkit.world.data import seeded
from clipkit.world.models import MODELS_DIR
from clipkit.world.scene import SceneSpec, render_batch, sample_scene
from clipkit.world.train_clip import cpu_seconds

CHECKPOINT_FORMAT = "world-stylegan2-train/1"
MODEL_NAME = "world-stylegan2"
DEFAULT_MODEL_OUT = MODELS_DIR / f"{MODEL_NAME}.safetensors"
DEFAULT_CHANNELS = "4:128,8:128,16:64,32:32,64:16"
AUGMENTS = ("translation", "cutout")


# ==================================================================================================== data
def world_scenes(generator: torch.Generator, n: int, split: str = "train") -> list[SceneSpec]:
    """``n`` one-object world scenes of ``split``: the distribution the generator learns."""
    return [sample_scene(generator, split, n_objects=1) for _ in range(n)]


def real_images(seed: int, step: int, rank: int, n: int, size: int) -> Tensor:
    """The ``n`` rendered training images of (step, rank), in [-1, 1]."""
    return render_batch(world_scenes(seeded(seed, "data", step, rank), n), size) * 2 - 1


def parse_channels(text: str) -> dict[int, int]:
    """"4:128,8:128,16:64" -> {4: 128, 8: 128, 16: 64}."""
    out = {}
    for item in text.split(","):
        if item.strip():
            res, ch = item.split(":")
            out[int(res)] = int(ch)
    return out


# ==================================================================================================== augmentation
def diff_augment(x: Tensor, policy: tuple[str, ...], generator: torch.Generator) -> Tensor:
    """DiffAugment (Zhao et al. 2020), differentiable, the same for real and fake images: ``translation`` (an
    integer shift of up to 1/8 of the side each way, zero (grey) filled) and ``cutout`` (a zero square of half the
    side at a random place). Draws come from ``generator`` (CPU), in policy order."""
    b, _, h, w = x.shape
    for name in policy:
        if name == "translation":
            p = max(1, int(h * 0.125 + 0.5))
            shift = torch.randint(-p, p + 1, (2, b, 1, 1), generator=generator).to(x.device)
            yy = torch.arange(h, device=x.device).view(1, h, 1) + p - shift[0]  # [B, H, 1] rows in the padded image
            xx = torch.arange(w, device=x.device).view(1, 1, w) + p - shift[1]
            padded = F.pad(x, (p, p, p, p))
            bi = torch.arange(b, device=x.device).view(b, 1, 1)
            x = padded.permute(0, 2, 3, 1)[bi, yy, xx].permute(0, 3, 1, 2)
        elif name == "cutout":
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator).to(x.device)
            cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator).to(x.device)
            rows = torch.arange(h, device=x.device).view(1, h, 1) - cy + ch // 2  # position inside the square
            cols = torch.arange(w, device=x.device).view(1, 1, w) - cx + cw // 2
            inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
            x = x * (~inside).unsqueeze(1).to(x.dtype)
        else:
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTS)}")
    return x


# ==================================================================================================== networks
def build_networks(a: argparse.Namespace) -> tuple[Generator, Discriminator]:
    """G (seed ``a.seed``) and D (seed ``a.seed + 1``) as the arguments describe them."""
    channels = parse_channels(a.channels)
    G = Generator(a.size, style_dim=a.style_dim, n_mlp=a.n_mlp, lr_mlp=a.lr_mlp, channels=channels,
                  fused_modconv=False, seed=a.seed)
    d_channels = parse_channels(a.d_channels) if a.d_channels else channels
    D = Discriminator(a.size, channels=d_channels, seed=a.seed + 1)
    return G, D


def warm_start(G: Generator, path: Path) -> None:
    """Start G (and so G_ema) from a saved generator of the same architecture; D starts fresh.

    A run folder is the only place a full checkpoint lives; when it is lost, training can go on from the shipped
    generator (the card's segment table records the lineage)."""
    from clipkit.methods.stylegan.checkpoints import load_stylegan

    saved = load_stylegan(path)
    mine, theirs = G.state_dict(), saved.state_dict()
    differ = {k: (tuple(theirs[k].shape) if k in theirs else None, tuple(v.shape)) for k, v in mine.items()
              if k not in theirs or theirs[k].shape != v.shape}
    if differ:
        raise SystemExit(f"--init-from {path}: another architecture (saved, given shapes): {differ}")
    G.load_state_dict({k: theirs[k].to(v.dtype) for k, v in mine.items()})


def sample_wplus(G: Generator, batch: int, mixing: float, generator: torch.Generator) -> Tensor:
    """W+ of ``batch`` random z, each mixed with a second w from a random layer on with probability ``mixing``."""
    device = G.device
    z = torch.randn(2 * batch, G.style_dim, generator=generator).to(device)
    w1, w2 = G.mapping(z).chunk(2)
    cut = torch.randint(1, G.n_latent, (batch,), generator=generator)
    mix = torch.rand(batch, generator=generator) < mixing
    cut = torch.where(mix, cut, torch.full_like(cut, G.n_latent)).to(device)
    layer = torch.arange(G.n_latent, device=device).view(1, -1, 1)
    return torch.where(layer < cut.view(-1, 1, 1), w1.unsqueeze(1), w2.unsqueeze(1))


def generate(G: Generator, batch: int, mixing: float, generator: torch.Generator) -> Tensor:
    """Training samples: mixed W+, fresh per-layer noise."""
    wplus = sample_wplus(G, batch, mixing, generator)
    noise = [torch.randn(s, generator=generator).to(G.device) for s in G.noise_shapes(batch)]
    return G.synthesis(wplus, noise=noise)


def ema_beta(batch: int, nimg: int, ema_kimg: float, rampup: float) -> float:
    """The EMA decay for one step: half-life ``ema_kimg`` thousand images, shorter while ``nimg * rampup`` is."""
    ema_nimg = ema_kimg * 1000
    if rampup > 0:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


# ==================================================================================================== the run
class Trainer:
    """G, D, G_ema and their optimisers; ``step(i)`` does one training step of the whole batch."""

    def __init__(self, a: argparse.Namespace, accelerator=None) -> None:
        self.a = a
        self.acc = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.device = accelerator.device if accelerator is not None else torch.device("cpu")
        if a.batch % self.world:
            raise SystemExit(f"--batch {a.batch} must be a multiple of the processes ({self.world})")
        self.local_batch = a.batch // self.world
        self.policy = tuple(p for p in a.augment.split(",") if p)
        unknown = [p for p in self.policy if p not in AUGMENTS]
        if unknown:
            raise SystemExit(f"--augment: unknown {unknown}; known: {', '.join(AUGMENTS)}")
        G, D = build_networks(a)
        if a.init_from:
            warm_start(G, a.init_from)
        self.G, self.D = G.to(self.device), D.to(self.device)
        if a.channels_last:  # activations only (parameters and optimiser state keep the usual layout)
            self.G.input.register_forward_hook(_channels_last_output)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        ratio = a.r1_every / (a.r1_every + 1) if a.r1_gamma > 0 else 1.0
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=a.lr, betas=(0.0, 0.99), eps=1e-8, **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=a.lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8,
                                      **fused)
        self.ema_kimg = a.ema_kimg if a.ema_kimg is not None else a.batch * 10 / 32
        self.step_done = 0
        self.elapsed = 0.0  # wall seconds of training before this segment
        self.cpu = 0.0  # CPU seconds of every process before this segment

    # --------------------------------------------------------------------------------------------- one step
    def _sync(self, module: nn.Module) -> None:
        """Average the gradients over the processes (one flat all-reduce)."""
        if self.world == 1:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        flat = self.acc.reduce(flat, "mean")
        k = 0
        for p in params:
            n = p.numel()
            p.grad = flat[k:k + n].view_as(p).clone()
            k += n

    def _aug(self, x: Tensor, g: torch.Generator) -> Tensor:
        return diff_augment(x, self.policy, g) if self.policy else x

    def step(self, i: int) -> dict[str, float]:
        a, G, D = self.a, self.G, self.D
        g = seeded(a.seed, "step", i, self.rank)
        real = real_images(a.seed, i, self.rank, self.local_batch, a.size).to(self.device)
        if a.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        out: dict[str, float] = {}

        # D: logistic loss on fakes and reals
        D.requires_grad_(True)
        with torch.no_grad():
            fake = generate(G, self.local_batch, a.mixing, g)
        logits_fake = D(self._aug(fake, g))
        logits_real = D(self._aug(real, g))
        loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._sync(D)
        self.opt_d.step()
        out.update(loss_d=loss_d.item(), d_real=logits_real.mean().item(), d_fake=logits_fake.mean().item())

        # D: lazy R1 on reals (the gradient with respect to the images before augmentation)
        if a.r1_gamma > 0 and i % a.r1_every == 0:
            real_r1 = real.detach().requires_grad_(True)
            logits = D(self._aug(real_r1, g))
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            self.opt_d.zero_grad(set_to_none=True)
            (a.r1_gamma / 2 * r1 * a.r1_every + 0 * logits[0, 0]).backward()
            self._sync(D)
            self.opt_d.step()
            out["r1"] = r1.item()

        # G: non-saturating logistic loss, D frozen
        D.requires_grad_(False)
        fake = generate(G, self.local_batch, a.mixing, g)
        loss_g = F.softplus(-D(self._aug(fake, g))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._sync(G)
        self.opt_g.step()
        D.requires_grad_(True)
        out["loss_g"] = loss_g.item()

        # G_ema
        beta = ema_beta(a.batch, (i + 1) * a.batch, self.ema_kimg, a.ema_rampup)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.G_ema.parameters()), list(G.parameters()), 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        self.step_done = i + 1
        return out

    # --------------------------------------------------------------------------------------------- checkpoints
    def save(self, path: Path, elapsed: float, cpu: float) -> None:
        """G, D, G_ema, both optimisers, the step and the clocks, in one safetensors file (atomic)."""
        tensors: dict[str, Tensor] = {}
        for prefix, module in (("g", self.G), ("d", self.D), ("g_ema", self.G_ema)):
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        g_opt, g_groups = optimizer_tensors(self.opt_g, "g_optim")
        d_opt, d_groups = optimizer_tensors(self.opt_d, "d_optim")
        tensors.update(g_opt)
        tensors.update(d_opt)
        meta = {"format": CHECKPOINT_FORMAT, "step": str(self.step_done), "elapsed": repr(elapsed), "cpu": repr(cpu),
                "g_optim_groups": g_groups, "d_optim_groups": d_groups,
                "g_config": json.dumps({k: (v if k != "channels" else {str(r): c for r, c in v.items()})
                                        for k, v in self.G.config.items()}),
                "args": json.dumps(architecture_args(self.a))}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, path, meta)

    def load(self, path: Path) -> None:
        """Restore what `save` wrote; a checkpoint of another trainer or architecture stops the program."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise SystemExit(f"{path} is not a checkpoint of this trainer (format {meta.get('format')!r}, want "
                                 f"{CHECKPOINT_FORMAT!r}): start a new run with another --out")
            saved = json.loads(meta.get("args", "{}"))
            now = architecture_args(self.a)
            differ = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
            if differ:
                raise SystemExit(f"{path} was trained with other settings {differ} (saved, given): resume with the "
                                 f"run's own arguments (see args.json)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for prefix, module in (("g", self.G), ("d", self.D), ("g_ema", self.G_ema)):
            n = len(prefix) + 1
            module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}, strict=True)
        load_optimizer(self.opt_g, tensors, "g_optim", meta["g_optim_groups"])
        load_optimizer(self.opt_d, tensors, "d_optim", meta["d_optim_groups"])
        self.step_done = int(meta["step"])
        self.elapsed = float(meta["elapsed"])
        self.cpu = float(meta["cpu"])

    # --------------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def samples(self, n: int = 64, seed: int = 0) -> Tensor:
        """``n`` G_ema samples in [0, 1] from fixed z (seed), const noise, psi 1: the progress grids."""
        z = torch.randn(n, self.G_ema.style_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        return ((self.G_ema(z) + 1) / 2).clamp(0, 1).cpu()

    def export(self, path: Path, latent_avg_n: int, metadata: dict) -> Path:
        """G_ema with ``latent_avg`` set, written fp16 (see ``save_generator_fp16``)."""
        G = copy.deepcopy(self.G_ema).cpu().float()
        G.set_latent_avg(G.mean_latent(latent_avg_n, generator=torch.Generator().manual_seed(self.a.seed)))
        return save_generator_fp16(path, G, metadata)


class Segment:
    """One invocation's training, as ``fit`` drives it: the step counter, one step, and the checkpoint with the
    run's clocks (wall seconds, and CPU seconds summed over the processes), the log line and the sample grids."""

    def __init__(self, trainer: Trainer, ckpt: Path) -> None:
        self.trainer, self.ckpt, self.a = trainer, ckpt, trainer.a
        self.start_step = trainer.step_done
        self.started, self.cpu_start = time.time(), cpu_seconds()
        self.cpu = trainer.cpu  # of every process, as of the last `gather`
        self.logged = (self.started, self.start_step)  # (time, step) of the last log line

    @property
    def step(self) -> int:
        return self.trainer.step_done

    def train_step(self) -> dict[str, float]:
        return self.trainer.step(self.trainer.step_done)

    def gather(self) -> None:
        """The CPU seconds of every process so far (a collective: all processes call it at the same step)."""
        acc = self.trainer.acc
        mine = torch.tensor([cpu_seconds() - self.cpu_start], dtype=torch.float64, device=self.trainer.device)
        self.cpu = self.trainer.cpu + float(acc.reduce(mine, "sum") if self.trainer.world > 1 else mine)

    def save(self, folder: Path) -> Path:
        self.trainer.save(self.ckpt, self.trainer.elapsed + time.time() - self.started, self.cpu)
        return self.ckpt

    def log_line(self, step: int, values: dict[str, float], _seconds: float) -> dict:
        """The run's log line: kimg, the values, seconds per step since the last line and the run's minutes."""
        now, (then, then_step) = time.time(), self.logged
        self.logged = (now, step)
        rounded = {k: round(v, 4) for k, v in values.items()}
        return {"step": step, "kimg": round(step * self.a.batch / 1000, 3), **rounded,
                "s_per_step": round((now - then) / max(1, step - then_step), 3),
                "minutes": round((self.trainer.elapsed + now - self.started) / 60, 2)}

    def sample_grid(self, info: StepInfo) -> None:
        """Every ``--sample-every`` steps, a grid of G_ema samples (main process: ``fit`` calls it there)."""
        if self.a.sample_every and info.step % self.a.sample_every == 0:
            save_grid(self.trainer.samples(), self.a.out / "samples" / f"step-{info.step:06d}.png")


def train_segment(segment: Segment, acc: Processes) -> int | None:
    """Train until ``--steps``, ``--max-minutes`` (one clock for all processes) or SIGTERM / Ctrl-C, checkpointing
    every ``--every`` steps and at the stop; returns the signal that ended it, if one did."""
    a = segment.a
    done = fit(segment, a.steps, a.out, every=a.every, progress=not a.no_progress, desc=MODEL_NAME,
               max_seconds=a.max_minutes * 60 if a.max_minutes else None, shown=("loss_d", "loss_g"),
               log_every=a.log_every, log_line=segment.log_line, mininterval=10, stop_signals=True, accelerator=acc,
               gather=segment.gather, callback=segment.sample_grid)
    if done.signal and acc.is_main_process:
        print(f"stopped by signal {done.signal} at step {segment.step}", flush=True)
    return done.signal


def _channels_last_output(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook on G's constant input: every later activation follows its channels-last layout, which CPU
    convolutions run about a quarter faster (0.83 against 1.10 CPU s a batch-16 step of the default config)."""
    return output.contiguous(memory_format=torch.channels_last)


def architecture_args(a: argparse.Namespace) -> dict:
    """The arguments a resumed run must share with the run it continues (everything that changes step i)."""
    keys = ("size", "style_dim", "n_mlp", "lr_mlp", "channels", "d_channels", "batch", "lr", "r1_gamma", "r1_every",
            "mixing", "ema_kimg", "ema_rampup", "augment", "seed", "channels_last", "init_from")
    return {k: str(getattr(a, k)) if k == "init_from" and a.init_from else getattr(a, k) for k in keys}


def save_generator_fp16(path: Path, G: Generator, metadata: dict) -> Path:
    """``save_generator``'s file (state dict, ``latent_avg``, config metadata) with the weights in fp16.

    ``save_generator`` writes fp32; this writes through it and then casts every tensor but ``latent_avg`` to fp16,
    keeping its metadata, atomically. ``load_generator`` reads the result (it builds in fp32).
    """
    from safetensors import safe_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.fp32")
    try:
        save_generator(tmp, G, metadata)
        with safe_open(str(tmp), "pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    finally:
        if tmp.exists():
            tmp.unlink()
    tensors = {k: (v if k == "latent_avg" else v.to(torch.float16)).contiguous() for k, v in tensors.items()}
    meta["dtype"] = "float16"
    save_safetensors(tensors, path, meta)
    path.chmod(0o644)  # a shipped file, readable like the others
    return path


def save_grid(images: Tensor, path: Path, nrow: int = 8) -> Path:
    """A PNG grid of images in [0, 1] (2 px grey gaps)."""
    from torchvision.utils import make_grid

    from clipkit.guidance.images import save_image

    return save_image(make_grid(images, nrow=nrow, padding=2, pad_value=0.5), path)


# ==================================================================================================== CLI
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, logs, sample grids, done.json")
    p.add_argument("--model-out", type=Path, default=DEFAULT_MODEL_OUT, help="the finished generator (fp16)")
    p.add_argument("--steps", type=int, default=100_000, help="stop after this many steps in all")
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock budget of this segment (0 = none)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--style-dim", type=int, default=256)
    p.add_argument("--n-mlp", type=int, default=2)
    p.add_argument("--lr-mlp", type=float, default=0.01)
    p.add_argument("--channels", default=DEFAULT_CHANNELS, help="generator channels per resolution")
    p.add_argument("--d-channels", default="", help="discriminator channels per resolution (default: --channels)")
    p.add_argument("--batch", type=int, default=16, help="images per step over all processes")
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--r1-every", type=int, default=16)
    p.add_argument("--mixing", type=float, default=0.9, help="style mixing probability")
    p.add_argument("--ema-kimg", type=float, default=None, help="EMA half-life in kimg (default batch * 10 / 32)")
    p.add_argument("--ema-rampup", type=float, default=0.05)
    p.add_argument("--augment", default="", help="DiffAugment policy: translation,cutout (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last activations (faster CPU convolutions; float rounding differs)")
    p.add_argument("--every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--sample-every", type=int, default=1000, help="a grid of G_ema samples every N steps (0: none)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--latent-avg-n", type=int, default=8192, help="mapped z averaged for latent_avg")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start G from this saved generator (same architecture; D fresh) instead of from scratch")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.safetensors")
    p.add_argument("--export-only", action="store_true", help="write the model from the checkpoint, no training")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    a = p.parse_args(argv)
    for name in ("steps", "batch", "r1_every", "every", "log_every", "latent_avg_n"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    acc = training_accelerator()
    main_proc = acc.is_main_process
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt = a.out / "last.safetensors"
    trainer = Trainer(a, acc)
    if (a.resume or a.export_only) and ckpt.exists():
        trainer.load(ckpt)
        if main_proc:
            print(f"resumed from {ckpt} at step {trainer.step_done}", flush=True)
    elif a.export_only:
        raise SystemExit(f"--export-only: no checkpoint at {ckpt}")
    elif ckpt.exists():
        raise SystemExit(f"{ckpt} exists: pass --resume to continue that run, or use another --out")
    launcher = (f"torchrun --standalone --nproc_per_node {acc.num_processes}" if acc.num_processes > 1 else "python")
    command = f"{launcher} -m clipkit.world.train_stylegan " + shlex.join(sys.argv[1:] if argv is None else argv)
    if main_proc and not a.export_only:
        (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}
                                                    | {"processes": acc.num_processes}, indent=1))
        n_g = sum(p.numel() for p in trainer.G.parameters())
        n_d = sum(p.numel() for p in trainer.D.parameters())
        print(f"G {n_g / 1e6:.2f} M, D {n_d / 1e6:.2f} M parameters; steps {trainer.step_done}->{a.steps}, batch "
              f"{a.batch} on {acc.num_processes} process(es), {torch.get_num_threads()} thread(s)", flush=True)

    segment = Segment(trainer, ckpt)
    signum = None if a.export_only else train_segment(segment, acc)
    i, start_step = trainer.step_done, segment.start_step
    seg_seconds = time.time() - segment.started
    segment.gather()
    cpu = segment.cpu
    done: dict = {}
    if main_proc:
        steps_run = i - start_step
        if steps_run:
            save_grid(trainer.samples(), a.out / "samples" / f"step-{i:06d}.png")
        meta = {"steps": str(i), "kimg": f"{i * a.batch / 1000:.1f}", "training": architecture_args(a),
                "trainer": "clipkit.world.train_stylegan", "data": "one-object world scenes, train split, 64 px"}
        model = trainer.export(a.model_out, a.latent_avg_n, meta)
        total_min = (trainer.elapsed + (0 if a.export_only else seg_seconds)) / 60
        done = {"steps": i, "kimg": round(i * a.batch / 1000, 2), "steps_this_segment": steps_run,
                "segment_minutes": round(seg_seconds / 60, 2), "total_minutes": round(total_min, 2),
                "cpu_minutes": round(cpu / 60, 1),
                "s_per_step_this_segment": round(seg_seconds / steps_run, 3) if steps_run else None,
                "processes": acc.num_processes, "threads": torch.get_num_threads(), "model": str(model),
                "model_mb": round(model.stat().st_size / 1e6, 2)}
        if not a.export_only:
            (a.out / "done.json").write_text(json.dumps(done, indent=1))
            note = {"note": f"ended by signal {signum}"} if signum else {}
            with open(a.out / "segments.jsonl", "a") as f:
                f.write(json.dumps({"command": command, **done, **note}) + "\n")
        print(json.dumps(done), flush=True)
    acc.wait_for_everyone()
    return done


if __name__ == "__main__":
    main()
