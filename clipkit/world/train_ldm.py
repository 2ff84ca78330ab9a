"""Train the world latent diffusion model: a VAE of world scenes, then a diffusion prior over its latents.

    clipkit train world-ldm --out runs/world-ldm --model-out world/models/world-ldm [--resume]
    accelerate launch --multi_gpu -m clipkit.world.train_ldm ...   # several GPUs: each process renders its own share
    torchrun --standalone --nproc_per_node 2 -m clipkit.world.train_ldm ... --threads 1   # several CPU processes

Stage 1, the VAE (diffusers' AutoencoderKL, 32 px, a 8 x 4 x 4 latent): the ELBO with a Gaussian likelihood
(sigma 0.1 on [-1, 1] pixels) on rendered training scenes, AdamW, cosine learning rate.  Stage 2, the prior
(``clipkit.methods.diffusion.denoiser.LatentDenoiser``): the posterior means and stds of rendered scenes of another
seed are encoded once (kept in <out>/latents.safetensors), then the epsilon-prediction DDPM loss (Ho et al.) on
posterior samples, on diffusers' cosine schedule (``squaredcos_cap_v2``, 1,000 steps), with EMA weights (0.999),
which are what ships.  Both stages run in the one training loop (``clipkit.guidance.training.fit``; a log of each
in <out>/vae-log.jsonl and prior-log.jsonl), checkpoint to <out> (safetensors, optimiser included) and resume exactly:
every random draw of step i comes from a generator seeded by (seed, stage, i).  The result is one folder of
diffusers components (``clipkit.methods.diffusion.latent_model``), fp16.  Devices and processes go through
accelerate (prepare, backward, gradient clipping): on a CPU machine ``torchrun --standalone --nproc_per_node N
-m clipkit.world.train_ldm ...`` runs N data-parallel processes (tested with 2); several GPUs are untested here.

With ``--condition CLIP`` the prior is text-conditioned (the latent diffusion / unCLIP decoder recipe at this
scale): it reads that CLIP's unit embedding of each scene's caption, and a share ``--drop-caption`` of every
batch is trained with a learned null embedding instead, so one network gives both terms of classifier-free
guidance.  An existing run's VAE and encoded latents are reused by ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from clipkit.guidance.runs import (
    load_training_checkpoint,
    save_safetensors,
    save_training_checkpoint,
    training_accelerator,
)
from clipkit.guidance.training import Steps, fit
from clipkit.world.data import WorldDataset, seeded
from clipkit.world.train_clip import cpu_seconds, lr_at

CHECKPOINT_FORMAT = "world-ldm-train/1"
TRAIN_TIMESTEPS = 1000
SCHEDULE = "squaredcos_cap_v2"
SIZE = 32
LATENT_CHANNELS = 8
VAE_SEED, PRIOR_SEED = 5, 7  # world seeds of the scenes each stage sees (the prior's are new to the VAE)


def make_vae():
    """The world VAE: four down / up blocks, so 32 px scenes become an 8 x 4 x 4 latent."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(32, 64, 64, 128), layers_per_block=1, latent_channels=LATENT_CHANNELS,
                         norm_num_groups=16, sample_size=SIZE)


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=SCHEDULE)


def _checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, elapsed: float,
                extra: dict[str, torch.Tensor] | None = None) -> None:
    save_training_checkpoint(path, CHECKPOINT_FORMAT, model, opt, {"step": str(step), "elapsed": repr(elapsed)},
                             extra)


def _restore(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float, dict]:
    """(step, elapsed seconds, the other tensors) from a checkpoint `_checkpoint` wrote."""
    meta, rest = load_training_checkpoint(path, CHECKPOINT_FORMAT, model, opt,
                                          "is not a checkpoint of this trainer: start a new run with another --out")
    return int(meta["step"]), float(meta["elapsed"]), rest


def _scenes(ds: WorldDataset, indices: list[int]) -> torch.Tensor:
    """Rendered scenes in [-1, 1]."""
    return torch.stack([image for image, _ in ds.__getitems__(indices)]) * 2 - 1


class _NegativeElbo(torch.nn.Module):
    """The VAE's loss as a module's forward, so accelerate's DDP wrapper sees (and syncs) the whole step."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample(generator=generator)).sample
        nll = ((rec - x) ** 2).flatten(1).sum(1) / (2 * 0.1**2)
        return (nll + post.kl()).mean() / x[0].numel(), ((rec - x) ** 2).mean().detach()


def train_vae(acc, out: Path, steps: int, batch: int, lr: float, seed: int, resume: bool, every: int):
    """Stage 1; returns the trained VAE (unwrapped, eval mode)."""
    torch.manual_seed(seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr, weight_decay=0.0)
    path, start, elapsed = out / "vae-last.safetensors", 0, 0.0
    if resume and path.exists():
        start, elapsed, _ = _restore(path, vae, opt)
    elbo, opt = acc.prepare(_NegativeElbo(vae), opt)
    ds = WorldDataset(None, seed=VAE_SEED, size=SIZE, noise=0.0, normalized=False, group_size=1)
    world, rank = acc.num_processes, acc.process_index
    t0 = time.time() - elapsed

    def step(i: int) -> dict[str, float]:
        for group in opt.param_groups:
            group["lr"] = lr_at(i, steps, lr, warmup=0)
        first = (i * world + rank) * batch
        x = _scenes(ds, list(range(first, first + batch))).to(acc.device)
        loss, mse = elbo(x, seeded(seed, "vae", i, rank))
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(elbo.parameters(), 1.0)
        opt.step()
        return {"mse": float(mse)}

    def save(_: Path, done: int) -> Path:
        _checkpoint(path, vae, opt, done, time.time() - t0)
        return path

    fit(Steps(step, save, start), steps, out, every=every, desc="vae", shown=("mse",), log="vae-log.jsonl",
        accelerator=acc)
    acc.wait_for_everyone()
    return vae.eval().requires_grad_(False), time.time() - t0


@torch.inference_mode()
def encode_scenes(vae, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds of `n` rendered training scenes of a seed the VAE did not train on."""
    ds = WorldDataset(None, seed=PRIOR_SEED, size=SIZE, noise=0.0, normalized=False, group_size=1, length=n)
    means, stds = [], []
    for i in tqdm(range(0, n, 256), desc="encode"):
        post = vae.encode(_scenes(ds, list(range(i, min(n, i + 256)))).to(device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    return torch.cat(means), torch.cat(stds)


@torch.inference_mode()
def caption_embeddings(clip_name: str, n: int, device: torch.device, pretrained: str | None = None
                       ) -> torch.Tensor:
    """(n, D) unit text embeddings on `device`, by the CLIP `clip_name`, of the captions of the scenes
    `encode_scenes` encodes (the same dataset and indices), for a text-conditioned prior."""
    from clipkit.guidance.clip import load_clip

    clip = load_clip(clip_name, pretrained, device=device)
    ds = WorldDataset(None, seed=PRIOR_SEED, size=SIZE, noise=0.0, normalized=False, group_size=1, length=n)
    captions = [ds.scene_and_caption(i)[1] for i in range(n)]
    unique = list(dict.fromkeys(captions))
    table = torch.cat([clip.encode_text(unique[i:i + 512]) for i in range(0, len(unique), 512)])
    where = {c: k for k, c in enumerate(unique)}
    return table[torch.tensor([where[c] for c in captions], device=table.device)].to(device)


def train_prior(acc, vae, out: Path, steps: int, batch: int, lr: float, n_scenes: int, seed: int, resume: bool,
                every: int, ema_decay: float = 0.999, condition: str | None = None, drop_caption: float = 0.1,
                condition_weights: str | None = None):
    """Stage 2; returns the denoiser holding the EMA weights.  With `condition` (a CLIP name) the prior reads
    that CLIP's embedding of each scene's caption, dropped for a share `drop_caption` of the batch so that the
    same network also models scenes without text (classifier-free guidance)."""
    from clipkit.methods.diffusion.denoiser import LatentDenoiser

    latents = out / "latents.safetensors"
    if acc.is_main_process and not (resume and latents.exists()):
        mean, std = encode_scenes(vae, n_scenes, acc.device)
        save_safetensors({"mean": mean.contiguous(), "std": std.contiguous()}, latents, {"scenes": str(n_scenes)})
    acc.wait_for_everyone()
    data = load_file(str(latents))
    mean, std = data["mean"].to(acc.device), data["std"].to(acc.device)
    texts = caption_embeddings(condition, n_scenes, acc.device, condition_weights) if condition else None
    torch.manual_seed(seed)
    net = LatentDenoiser(latent_channels=LATENT_CHANNELS, latent_size=SIZE // 8,
                         cond_dim=texts.shape[1] if texts is not None else 0, cond_clip=condition)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=0.0)
    path, start, elapsed = out / "prior-last.safetensors", 0, 0.0
    ema = [p.detach().clone() for p in net.parameters()]
    if resume and path.exists():
        start, elapsed, rest = _restore(path, net, opt)
        ema = [rest[f"ema.{n}"] for n, _ in net.named_parameters()]
    sched = make_scheduler()
    net, opt = acc.prepare(net, opt)
    params = list(net.parameters())
    ema = [e.to(acc.device) for e in ema]
    rank = acc.process_index
    t0 = time.time() - elapsed

    def step(i: int) -> dict[str, float]:
        for group in opt.param_groups:
            group["lr"] = lr_at(i, steps, lr, warmup=200)
        g = seeded(seed, "prior", i, rank)
        idx = torch.randint(0, len(mean), (batch,), generator=g).to(acc.device)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g).to(acc.device)
        noise = torch.randn(x0.shape, generator=g).to(acc.device)
        t = torch.randint(0, TRAIN_TIMESTEPS, (batch,), generator=g).to(acc.device)
        if texts is None:
            pred = net(sched.add_noise(x0, noise, t), t)
        else:  # drawn after the unconditioned draws, so both kinds of run see the same latents and noise
            keep = (torch.rand(batch, generator=g) >= drop_caption).to(acc.device)
            pred = net(sched.add_noise(x0, noise, t), t, texts[idx], keep)
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - ema_decay)
        return {"loss": loss.item()}

    def save(_: Path, done: int) -> Path:
        names = [n for n, _ in acc.unwrap_model(net).named_parameters()]
        _checkpoint(path, acc.unwrap_model(net), opt, done, time.time() - t0,
                    {f"ema.{n}": e for n, e in zip(names, ema)})
        return path

    fit(Steps(step, save, start), steps, out, every=every, desc="prior", log="prior-log.jsonl", accelerator=acc)
    acc.wait_for_everyone()
    final = acc.unwrap_model(net)
    with torch.no_grad():
        for p, e in zip(final.parameters(), ema):
            p.copy_(e)
    return final.eval().requires_grad_(False), time.time() - t0


def main(argv: list[str] | None = None) -> None:
    from clipkit.methods.diffusion.latent_model import save_latent_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, encoded latents, done.json")
    p.add_argument("--model-out", type=Path, required=True, help="where the finished model folder is written")
    p.add_argument("--vae-steps", type=int, default=2500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--prior-steps", type=int, default=8000)
    p.add_argument("--prior-batch", type=int, default=256)
    p.add_argument("--prior-lr", type=float, default=1e-3)
    p.add_argument("--scenes", type=int, default=40000, help="rendered scenes encoded for the prior")
    p.add_argument("--condition", default=None, metavar="CLIP",
                   help="train a text-conditioned prior on this CLIP's caption embeddings (e.g. world-guide)")
    p.add_argument("--condition-weights", default=None, help="that CLIP's weights (default: as it resolves)")
    p.add_argument("--drop-caption", type=float, default=0.1,
                   help="share of each batch trained without its caption (classifier-free guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    a = p.parse_args(argv)
    for name in ("vae_steps", "vae_batch", "prior_steps", "prior_batch", "scenes", "every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    acc = training_accelerator()
    a.out.mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}, indent=1))
    cpu0 = cpu_seconds()
    vae, vae_s = train_vae(acc, a.out, a.vae_steps, a.vae_batch, a.vae_lr, a.seed, a.resume, a.every)
    if not 0 <= a.drop_caption < 1:
        p.error("--drop-caption must be in [0, 1)")
    net, prior_s = train_prior(acc, vae, a.out, a.prior_steps, a.prior_batch, a.prior_lr, a.scenes, a.seed,
                               a.resume, a.every, condition=a.condition, drop_caption=a.drop_caption,
                               condition_weights=a.condition_weights)
    if acc.is_main_process:
        save_latent_model(a.model_out, vae, net, make_scheduler())
        done = {"vae_minutes": round(vae_s / 60, 1), "prior_minutes": round(prior_s / 60, 1),
                "cpu_minutes_this_process": round((cpu_seconds() - cpu0) / 60, 1),
                "threads": torch.get_num_threads(), "processes": acc.num_processes, "model": str(a.model_out)}
        (a.out / "done.json").write_text(json.dumps(done, indent=1))
        print(json.dumps(done))


if __name__ == "__main__":
    main()
