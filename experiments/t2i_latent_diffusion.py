"""Text to image by CLIP-guided latent diffusion against the pixel baseline, judged by CLIPs that did not guide.

    python experiments/t2i_latent_diffusion.py [--guide PATH] [--judge PATH ...] [--batch 8] [--seed 0] [--save DIR]

The generator is a latent diffusion model folder (default the shipped world-ldm, trained by
`clipkit train world-ldm`); the sampler is the `diffusion` method (clipkit/methods/diffusion/
clip_guided_diffusion.py).  Variants measured against the pixel method's defaults on the same seeds, in the same
run: unguided samples, the two guidance forms ("eps": classifier guidance on the noise; "x0": a step on the
predicted clean latent), self-recurrence (passes per step) and, for a text-conditioned model, classifier-free
guidance ("text W": its scale) alone or with CLIP guidance (with an unconditioned model "text" rows are the same
samples as the rows without text).  Per variant: how many images each judge ranks
first as the prompt among the 66 one-object captions, the judge-free figure share and disc IoU of the prompt's
colour, and seconds per batch.
"""

from __future__ import annotations

import time
from pathlib import Path

from t2i_world_judge import (
    ONE_OBJECT,
    judged_cells,
    load_judges,
    parse_prior_bench,
    prior_bench_parser,
    save_strip,
)

from clipkit.guidance.clip import load_clip
from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion
from clipkit.methods.diffusion.latent_model import load_latent_model
from clipkit.methods.image.generate import generate

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # label -> diffusion settings; "text" = classifier-free guidance of a text-conditioned model
    "prior, unguided": {"guidance_scale": 0.0, "recurrence": 1, "cfg_scale": 0.0},
    "prior, eps guidance 1": {"guidance_scale": 1.0, "recurrence": 1, "cfg_scale": 0.0},
    "prior, eps guidance 0.5, recurrence 3": {"cfg_scale": 0.0},
    "prior, eps guidance 0.7, recurrence 3": {"guidance_scale": 0.7, "cfg_scale": 0.0},
    "prior, 25 steps, recurrence 2": {"steps": 25, "recurrence": 2, "cfg_scale": 0.0},
    "prior, eps guidance 0.5, recurrence 5": {"guidance_scale": 0.5, "recurrence": 5, "cfg_scale": 0.0},
    "prior, x0 guidance 0.1, recurrence 3": {"guidance": "x0", "guidance_scale": 0.1, "cfg_scale": 0.0},
    "text 1, no CLIP": {"guidance_scale": 0.0, "recurrence": 1, "cfg_scale": 1.0},
    "text 3, no CLIP": {"guidance_scale": 0.0, "recurrence": 1, "cfg_scale": 3.0},
    "text 6, no CLIP": {"guidance_scale": 0.0, "recurrence": 1, "cfg_scale": 6.0},
    "text 3, eps guidance 0.5, recurrence 3": {"cfg_scale": 3.0},
    "text 3, eps guidance 0.25, recurrence 2": {"cfg_scale": 3.0, "guidance_scale": 0.25, "recurrence": 2},
    "text 3, 25 steps, eps 0.5, recurrence 2": {"cfg_scale": 3.0, "steps": 25, "recurrence": 2},
}


def main() -> None:
    p = prior_bench_parser(__doc__.splitlines()[0], batch=8)
    p.add_argument("--guide", default=None, help="guide weights (default the shipped guide)")
    p.add_argument("--only", action="append", default=[], help="run only variants whose label contains this")
    a = parse_prior_bench(p)
    ldm = load_latent_model(a.diffusion_model, device="cpu")
    clip = load_clip("world-guide", pretrained=a.guide, device="cpu")
    judges = load_judges(a.judge)
    variants = {"pixels (generate defaults)": lambda: generate(clip=clip, progress=False, prompt=a.prompt,
                                                               batch=a.batch, seed=a.seed).images}
    for label, overrides in VARIANTS.items():
        variants[label] = lambda o=overrides: clip_guided_diffusion(clip=clip, latent_model=ldm, progress=False,
                                                                    prompt=a.prompt, batch=a.batch, seed=a.seed,
                                                                    **o).images
    variants = {k: v for k, v in variants.items() if not a.only or any(o in k for o in a.only)}
    print(f"{a.prompt!r}, batch {a.batch}, seed {a.seed}; first = judge ranks the prompt first among {len(ONE_OBJECT)}")
    print("| image | " + " | ".join(f"{n} first" for n in judges) + " | figure share | disc IoU | s / batch |")
    print("|---|" + "---|" * (len(judges) + 3))
    for label, run in variants.items():
        t0 = time.time()
        images = run()
        seconds = time.time() - t0
        print(f"| {label} | " + " | ".join(judged_cells(images, judges, a.prompt)) + f" | {seconds:.1f} |", flush=True)
        if a.save is not None:
            save_strip(images, a.save / ("".join(c if c.isalnum() else "-" for c in label) + ".png"))


if __name__ == "__main__":
    main()
