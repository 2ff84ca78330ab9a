"""StyleGAN2 generator forward vs one world-guide CLIP image forward, per image, measured in the same run.

    .venv/bin/python bench/stylegan.py [--threads 1] [--repeats 10] [--batch 8] [--with-256]

Configs (random weights: timing depends on the architecture only):

* ``world-64``: the size planned for the world model: 64 px, style_dim 256, n_mlp 2 (StyleGAN3's small-mapping
  choice; the mapping is negligible next to the synthesis anyway), channels 256/256/128/64/32 at 4/8/16/32/64 px.
  3.0 M parameters: small enough for CPU, still the full StyleGAN2 layer stack (9 modulated convs, 5 ToRGB).
* ``paper256`` (``--with-256``): stylegan2-ada-pytorch's 256 px ``--cfg=paper256`` shape: style_dim 512, n_mlp 8,
  channel_base 16384 = channel_multiplier 1 (512 channels up to 32 px, then 256/128/64), 24.8 M parameters.

Each row times the generator (z -> image, noise 'const') and the CLIP image encoder on that image (mapped to [0, 1];
``encode_image`` includes its resize to the CLIP input size), both per image at the given batch size, medians over
``--repeats`` after one warm-up, the two timed alternately (shared machines), under ``torch.inference_mode``.
``modconv`` is the modulated-conv path: 'fused' (per-sample weights, one grouped conv; the port's default) or
'unfused' (scale activations, shared weights).
Without the world CLIP's weights the same architecture with random weights is timed; the output says which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from clipkit.guidance.clip import RANDOM, load_clip
from clipkit.guidance.errors import WeightsNotFoundError
from clipkit.methods.stylegan.network import Generator

CONFIGS = {
    "world-64": dict(size=64, style_dim=256, n_mlp=2, channels={4: 256, 8: 256, 16: 128, 32: 64, 64: 32}),
    "paper256": dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=1),
}


def paired_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each function, run alternately so that load from other processes hits all of them alike."""
    for fn in fns:
        fn()  # warm-up: first-call allocations
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8, help="batch size of the second row per config (first: 1)")
    ap.add_argument("--with-256", action="store_true", help="also time the 256 px paper256 generator")
    ap.add_argument("--clip", default="world-guide")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    try:
        clip, weights = load_clip(args.clip, None, device), "trained"
    except WeightsNotFoundError:
        clip, weights = load_clip(args.clip, RANDOM, device), "random (timing only)"
    print(
        f"CLIP {clip.name} ({weights}, input {clip.image_size} px); {torch.get_num_threads()} thread(s); "
        f"device {device}; medians of {args.repeats}"
    )
    print(f"{'config':<11} {'params':>7} {'batch':>5} {'modconv':<8} {'G ms/img':>9} {'CLIP ms/img':>11} {'G/CLIP':>7}")
    rows = []
    names = ["world-64"] + (["paper256"] if args.with_256 else [])
    for name in names:
        for fused in (True, False):
            G = Generator(**CONFIGS[name], fused_modconv=fused, seed=0).eval().to(device)
            n_params = sum(p.numel() for p in G.parameters())
            for batch in sorted({1, args.batch}):
                if batch == 1 and not fused:
                    continue  # identical work to fused at batch 1
                z = torch.randn(batch, G.style_dim, generator=torch.Generator().manual_seed(0)).to(device)
                with torch.inference_mode():
                    images = ((G(z) + 1) / 2).clamp(0, 1)
                    fns = [lambda G=G, z=z: G(z), lambda images=images: clip.encode_image(images)]
                    t_gen, t_clip = (t / batch for t in paired_medians(fns, args.repeats))
                row = {"config": name, "params_m": round(n_params / 1e6, 2), "batch": batch,
                       "modconv": "fused" if fused else "unfused", "generator_ms_per_image": round(1000 * t_gen, 2),
                       "clip_ms_per_image": round(1000 * t_clip, 2), "ratio": round(t_gen / t_clip, 2)}  # fmt: skip
                rows.append(row)
                print(
                    f"{name:<11} {row['params_m']:>6}M {batch:>5} {row['modconv']:<8} "
                    f"{row['generator_ms_per_image']:>9} {row['clip_ms_per_image']:>11} {row['ratio']:>6}x"
                )
    if args.json:
        args.json.write_text(json.dumps({"clip": f"{clip.name} ({weights})", "threads": args.threads, "rows": rows},
                                        indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
