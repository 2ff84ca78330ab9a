"""Text to image through a decoder prior against the pixel baseline, judged by CLIPs that did not guide.

    python bench/t2i_decoder_prior.py [--guide PATH ...] [--judge PATH ...] [--batch 4] [--save DIR]

The prior is a small VAE of world scenes (diffusers' AutoencoderKL, 32 px, a 8 x 4 x 4 latent), trained here on
first use (`--train-steps`, about 22 minutes on 2 cores) and kept in `--vae`.  Text to image then optimises the
latent, as VQGAN-CLIP does with its decoder and StyleCLIP with StyleGAN's w (CLIP loss plus an L2 pull of the
latent toward 0), instead of the pixels.  Per guide, the baseline is `generate` with its defaults on the same
seeds, in the same run.  Prints, per guide and parameterisation, how many images each judge ranks first as the
prompt among the 66 one-object captions, and the judge-free figure share and disc IoU of the prompt's colour.
An experiment toward the world generators of the later back-ends: nothing here is shipped or used by the app.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from t2i_world_judge import ONE_OBJECT, judged_cells, load_judges, save_strip  # noqa: E402

from generators.image.generate import generate  # noqa: E402
from guidance.augment import Cutouts  # noqa: E402
from guidance.clip import load_clip  # noqa: E402
from guidance.guide import Guide, PromptTerm  # noqa: E402
from world.data import HardNegativeBatchSampler, WorldDataset  # noqa: E402
from world.train_clip import lr_at  # noqa: E402

LATENT = 8  # latent channels; the latent is LATENT x size/8 x size/8


def make_vae(size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(32, 64, 64, 128), layers_per_block=1, latent_channels=LATENT,
                         norm_num_groups=16, sample_size=size)


def train_vae(out: Path, size: int, steps: int, batch: int = 32, seed: int = 0) -> None:
    """ELBO with a Gaussian likelihood (sigma 0.1 on [-1, 1] pixels) on world training scenes; cosine lr."""
    torch.manual_seed(seed)
    vae = make_vae(size)
    opt = torch.optim.AdamW(vae.parameters(), 1e-3, weight_decay=0.0, fused=True)
    ds = WorldDataset(None, seed=5, size=size, noise=0.0, normalized=False, group_size=1, length=(steps + 1) * batch)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=HardNegativeBatchSampler(ds, batch), num_workers=1)
    t0 = time.time()
    for i, (x, _) in enumerate(loader):
        if i >= steps:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(i, steps, 1e-3, warmup=0)
        x = x * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        nll = ((rec - x) ** 2).flatten(1).sum(1) / (2 * 0.1**2)
        kl = post.kl()
        loss = (nll + kl).mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if i % 250 == 0:
            print(f"vae step {i}: {time.time() - t0:.0f} s, mse {float(((rec - x) ** 2).mean()):.4f}, "
                  f"kl {float(kl.mean()):.0f}", flush=True)
    vae.save_pretrained(out)  # config.json + safetensors
    print(f"vae: {steps} steps in {(time.time() - t0) / 60:.1f} min -> {out}", flush=True)


def decode_for_clip(vae, latent: torch.Tensor) -> torch.Tensor:
    """The VAE's image of `latent` in [0, 1], upsampled to the world CLIPs' 64 px."""
    image = vae.decode(latent).sample.add(1).div(2)
    return F.interpolate(image, size=64, mode="bilinear", align_corners=False).clamp(0, 1)


def through_decoder(vae, clip, prompt: str, batch: int, seed: int, steps: int, l2: float, size: int) -> torch.Tensor:
    """Optimise the latent of `vae` so its decoded image (upsampled to 64 px) reads as `prompt` to `clip`."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, LATENT, size // 8, size // 8, generator=gen).requires_grad_(True)
    guide = Guide(clip, [PromptTerm(prompts=prompt, view=Cutouts(32, min_frac=1.0, noise=0.5))], generator=gen)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        loss = guide(decode_for_clip(vae, z)).loss + l2 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return decode_for_clip(vae, z)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red circle")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--l2", type=float, default=0.1, help="weight of the latent's L2 pull toward 0")
    p.add_argument("--vae", type=Path, default=ROOT / "runs" / "world-vae")
    p.add_argument("--size", type=int, default=32, help="VAE resolution (images are upsampled to 64 px)")
    p.add_argument("--train-steps", type=int, default=2500)
    p.add_argument("--guide", action="append", default=[], help="guide weights (repeat; default the shipped guide)")
    p.add_argument("--judge", action="append", default=[], help="extra judge weights besides the shipped judge")
    p.add_argument("--save", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.prompt not in ONE_OBJECT:
        p.error(f"--prompt must be a one-object caption such as 'a red circle'; got {a.prompt!r}")
    torch.set_num_threads(a.threads)
    if not (a.vae / "config.json").exists():
        train_vae(a.vae, a.size, a.train_steps)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(a.vae).eval().requires_grad_(False)
    judges = load_judges(a.judge)
    print(f"{a.prompt!r}, batch {a.batch}, seed {a.seed}; first = judge ranks the prompt first among {len(ONE_OBJECT)}")
    print("| guide | image | " + " | ".join(f"{n} first" for n in judges) + " | figure share | disc IoU |")
    print("|---|---|" + "---|" * (len(judges) + 2))
    for guide_path in a.guide or [None]:
        clip = load_clip("world-guide", pretrained=guide_path, device="cpu")
        name = "shipped" if not guide_path else (
            Path(guide_path).parent.name if Path(guide_path).name == "final.safetensors" else Path(guide_path).stem)
        runs = {
            "pixels (generate defaults)": lambda clip=clip: generate(clip=clip, progress=False, prompt=a.prompt,
                                                                     batch=a.batch, seed=a.seed).images,
            f"decoder latent, L2 {a.l2:g}": lambda clip=clip: through_decoder(vae, clip, a.prompt, a.batch,
                                                                             a.seed, a.steps, a.l2, a.size),
        }
        for label, run in runs.items():
            images = run()
            print(f"| {name} | {label} | " + " | ".join(judged_cells(images, judges, a.prompt)) + " |", flush=True)
            if a.save is not None:
                save_strip(images, a.save / f"{name}-{label.split()[0]}.png")


if __name__ == "__main__":
    main()
