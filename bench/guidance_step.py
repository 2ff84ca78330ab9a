"""Cost of one Guide step relative to a bare open_clip forward+backward on the same batch.

Baseline: N ready-made 224 px crops -> open_clip encode_image -> cosine to a text embedding -> backward to
the pixels. Guide: one image -> N cutouts (roi_align + kornia jitter + noise) -> preprocessing -> the same
encoder -> spherical distance -> backward. Both measured interleaved in this run; prints the median ratio.
Random-init ViT-B-32 (architecture cost is what matters; no weights are needed).

    .venv/bin/python bench/guidance_step.py --cutouts 16 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from clipkit.guidance.augment import Cutouts
from clipkit.guidance.clip import load_clip
from clipkit.guidance.guide import Guide, PromptTerm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--cutouts", type=int, default=16)
    ap.add_argument("--image", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    clip = load_clip(args.model, "random", device="cpu")
    size = clip.image_size
    g = torch.Generator().manual_seed(0)
    text = clip.encode_text(["a red circle"])
    crops = torch.rand(args.cutouts, 3, size, size, generator=g)
    image = torch.rand(1, 3, args.image, args.image, generator=g)
    mean, std = clip.mean, clip.std
    guide = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(args.cutouts))], generator=g)

    def bare() -> None:
        x = crops.clone().requires_grad_(True)
        emb = F.normalize(clip.model.encode_image((x - mean) / std), dim=-1)
        (1 - emb @ text.T).mean().backward()

    def guided() -> None:
        x = image.clone().requires_grad_(True)
        guide(x).loss.backward()

    bare(), guided()  # warm-up
    t_bare, t_guide = [], []
    for _ in range(args.repeats):
        for fn, out in ((bare, t_bare), (guided, t_guide)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    mb, mg = statistics.median(t_bare), statistics.median(t_guide)
    print(f"model {args.model}, {args.cutouts} cutouts of {size}px from a {args.image}px image, "
          f"{torch.get_num_threads()} threads")
    print(f"bare open_clip forward+backward: {mb * 1000:.0f} ms   Guide step: {mg * 1000:.0f} ms")
    print(f"ratio Guide / bare = {mg / mb:.3f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
