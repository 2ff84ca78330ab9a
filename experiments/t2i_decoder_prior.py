"""Text to image through a decoder prior against the pixel baseline, judged by CLIPs that did not guide.

    python experiments/t2i_decoder_prior.py [--guide PATH ...] [--judge PATH ...] [--batch 4] [--save DIR]

The prior is the VAE of a latent diffusion model (default the shipped world-ldm: diffusers' AutoencoderKL, 32 px,
a 8 x 4 x 4 latent, trained by `clipkit train world-ldm`).  Text to image then optimises the
latent, as VQGAN-CLIP does with its decoder and StyleCLIP with StyleGAN's w (CLIP loss plus an L2 pull of the
latent toward 0), instead of the pixels.  Per guide, the baseline is `generate` with its defaults on the same
seeds, in the same run.  Prints, per guide and parameterisation, how many images each judge ranks first as the
prompt among the 66 one-object captions, and the judge-free figure share and disc IoU of the prompt's colour.
The experiment that led to the diffusion back-end: a decoder alone is not enough of a prior (it decodes texture
from most latents), so the shipped method samples the diffusion model's prior instead (t2i_latent_diffusion.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from t2i_world_judge import (
    ONE_OBJECT,
    judged_cells,
    load_judges,
    parse_prior_bench,
    prior_bench_parser,
    save_strip,
)

from clipkit.guidance.augment import Cutouts
from clipkit.guidance.clip import load_clip
from clipkit.guidance.guide import Guide, PromptTerm
from clipkit.methods.diffusion.latent_model import load_latent_model
from clipkit.methods.image.generate import generate

ROOT = Path(__file__).resolve().parents[1]


def through_decoder(ldm, clip, prompt: str, batch: int, seed: int, steps: int, l2: float) -> torch.Tensor:
    """Optimise a latent of `ldm`'s VAE so its decoded image (upsampled to 64 px) reads as `prompt` to `clip`."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, *ldm.latent_shape, generator=gen).requires_grad_(True)
    guide = Guide(clip, [PromptTerm(prompts=prompt, view=Cutouts(32, min_frac=1.0, noise=0.5))], generator=gen)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        loss = guide(ldm.decode(z, size=64)).loss + l2 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ldm.decode(z, size=64)


def main() -> None:
    p = prior_bench_parser(__doc__.splitlines()[0], batch=4)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--l2", type=float, default=0.1, help="weight of the latent's L2 pull toward 0")
    p.add_argument("--guide", action="append", default=[], help="guide weights (repeat; default the shipped guide)")
    a = parse_prior_bench(p)
    ldm = load_latent_model(a.diffusion_model, device="cpu")
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
            f"decoder latent, L2 {a.l2:g}": lambda clip=clip: through_decoder(ldm, clip, a.prompt, a.batch,
                                                                             a.seed, a.steps, a.l2),
        }
        for label, run in runs.items():
            images = run()
            print(f"| {name} | {label} | " + " | ".join(judged_cells(images, judges, a.prompt)) + " |", flush=True)
            if a.save is not None:
                save_strip(images, a.save / f"{name}-{label.split()[0]}.png")


if __name__ == "__main__":
    main()
