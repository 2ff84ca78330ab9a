"""What batching buys the diffusion method: seconds per image at several batch sizes against batch 1, one run.

    python bench/diffusion_batching.py [--batches 1,4,8] [--steps 50] [--threads 2]

Each sampling pass decodes the batch's clean-latent predictions and scores all their views in one CLIP forward
and backward (the guide batches every view of every image), so images drawn together share the fixed costs of
each step.  Prints, per batch size, seconds for the batch, seconds per image and the speed-up per image over
batch 1 measured in the same run (world-ldm, world guide, the method's defaults otherwise).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clipkit.guidance.clip import load_clip
from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion
from clipkit.methods.diffusion.latent_model import load_latent_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes; the first is the baseline")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        p.error("--batches needs positive sizes, e.g. 1,4,8")
    torch.set_num_threads(a.threads)
    ldm, clip = load_latent_model("world-ldm", device="cpu"), load_clip("world-guide", device="cpu")
    clip_guided_diffusion(clip=clip, latent_model=ldm, batch=1, steps=2, progress=False)  # warm-up
    print(f"diffusion defaults, {a.steps} steps, {a.threads} threads; baseline batch {batches[0]}")
    print("| batch | s / batch | s / image | speed-up per image |")
    print("|---|---|---|---|")
    base = None
    for b in batches:
        t0 = time.perf_counter()
        clip_guided_diffusion(clip=clip, latent_model=ldm, batch=b, steps=a.steps, progress=False)
        seconds = time.perf_counter() - t0
        per = seconds / b
        base = base or per
        print(f"| {b} | {seconds:.1f} | {per:.2f} | {base / per:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
