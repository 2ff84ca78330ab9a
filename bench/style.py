"""Feed-forward stylizer vs one CLIPstyler optimisation on the same image, measured in the same run.

    .venv/bin/python bench/style.py [--image PHOTO] [--size 512] [--steps 200] [--checkpoint STYLIZER]

Prints the per-image time of each and their ratio. Timing depends on the architectures, not on the weights, so
without a trained stylizer (``--checkpoint``) an untrained one of the default architecture is timed, and without
the world CLIP's weights the same architecture with random weights is used; the output says which. With
``--steps`` below 200 the full 200-step CLIPstyler time is also given, extrapolated from the measured s/step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from clipkit.guidance.clip import DEFAULT_MODEL, RANDOM, load_clip
from clipkit.guidance.errors import WeightsNotFoundError
from clipkit.guidance.images import as_tensor, load_image
from clipkit.methods.style.clipstyler import ClipStylerSettings, clipstyler, resize_long_side
from clipkit.methods.style.feedforward import TrainStylizerSettings, get_stylizer, stylize
from clipkit.methods.style.network import TextStylizer

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_IMAGE = ROOT.parent / "shared" / "images" / "content" / "boat.jpg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--size", type=int, default=512, help="long side both methods work at (paper: 512)")
    ap.add_argument("--steps", type=int, default=200, help="CLIPstyler steps (paper: 200)")
    ap.add_argument("--checkpoint", type=Path, help="trained stylizer; default: untrained, same architecture")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--repeats", type=int, default=5, help="stylizer passes timed (median reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        clip, weights = load_clip(args.model, args.pretrained, "cpu"), "trained"
    except WeightsNotFoundError:
        clip, weights = load_clip(args.model, RANDOM, "cpu"), "random (timing only)"
    image = resize_long_side(as_tensor(load_image(args.image)), args.size)
    h, w = image.shape[-2:]

    if args.checkpoint is not None:
        net, _ = get_stylizer(args.checkpoint)
        net_note = f"trained ({args.checkpoint})"
    else:
        arch = TrainStylizerSettings().architecture()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = TextStylizer(clip.embed_dim, **arch).eval()
        net_note = "untrained, default architecture (timing only)"

    stylize(image, clip=clip, network=net, prompt="warm-up", size=None)  # first-call allocations, text cache
    forward, total = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        res = stylize(image, clip=clip, network=net, prompt=f"oil painting {i}", size=None)  # uncached prompt
        total.append(time.perf_counter() - t0)
        forward.append(res.timings["forward_s"])
    ff_total = statistics.median(total)

    s = ClipStylerSettings(steps=args.steps, size=args.size, model=args.model)
    t0 = time.perf_counter()
    cs = clipstyler(image, s, clip=clip, progress=True)
    cs_total = time.perf_counter() - t0
    per_step = cs.timings["s_per_step"]
    full = cs_total if args.steps == 200 else cs_total - cs.timings["optimise_s"] + per_step * 200

    out = {
        "image": str(args.image), "size": [h, w], "clip": f"{clip.name} ({weights})", "stylizer": net_note,
        "threads": torch.get_num_threads(),
        "stylizer_forward_ms": round(1000 * statistics.median(forward), 1),
        "stylizer_per_image_ms": round(1000 * ff_total, 1),
        "stylizer_ms_per_512x512": round(1000 * statistics.median(forward) * 512 * 512 / (h * w), 1),
        "clipstyler_steps": args.steps, "clipstyler_s": round(cs_total, 2), "clipstyler_s_per_step": round(per_step, 3),
        "clipstyler_200_steps_s": round(full, 2),
        "ratio_measured": round(cs_total / ff_total, 1),
        "ratio_200_steps": round(full / ff_total, 1),
        "clipstyler_loss": [round(cs.history[0]["loss"], 1), round(cs.history[-1]["loss"], 1)],
    }
    print(f"image {args.image.name} at {w}x{h}; CLIP {out['clip']}; stylizer {net_note}; "
          f"{out['threads']} threads")
    print(f"feed-forward stylizer: {out['stylizer_per_image_ms']} ms per image "
          f"(forward {out['stylizer_forward_ms']} ms; {out['stylizer_ms_per_512x512']} ms per 512x512)")
    print(f"CLIPstyler, {args.steps} steps: {cs_total:.1f} s ({per_step:.2f} s/step; 200 steps: {full:.1f} s)")
    print(f"ratio (CLIPstyler / feed-forward per image): {out['ratio_measured']}x measured, "
          f"{out['ratio_200_steps']}x for the paper's 200 steps")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
