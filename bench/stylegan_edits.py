"""The StyleGAN editing methods timed in one run, on the same generator, CLIP and edit.

    .venv/bin/python bench/stylegan_edits.py [--threads 1] [--quick] [--no-1024] [--json out.json]

Measured (wall-clock seconds on this machine, models already loaded):

* StyleCLIP latent optimisation (its default 300 steps) vs a global-direction edit (the generator's channel
  statistics already computed: a new prompt pair's text encoding over the template ensemble, the relevance, one
  forward; and the same with the text cached, as when the strength or threshold moves) and a StyleMC apply (a found
  direction: one forward). Target: at least 100x faster than the optimisation.
* StyleMC direction finding (128 seeds) vs StyleCLIP mapper training (its default steps). Target: <= 1/10.
* StyleGAN-NADA adaptation (its default steps).
* The global-direction preprocessing (once per generator and CLIP): S moments over 100,000 codes, then every conv
  channel perturbed over ``stat_images`` images; the per-channel cost measured here is extrapolated to a 1024 px
  config-f generator (6,048 conv channels, the paper's 100 images, ViT-B/32 at 224 px) by the ratio of one image's
  generator + CLIP forward there and here (both measured in this run with random weights). That number is an
  extrapolation, not a measurement, and is printed as one.

The generator is the world StyleGAN2 when ``world-stylegan2`` is installed, else a random generator with its
architecture (64 px, style_dim 256, 2 mapping layers, channels 128/128/64/32/16; the output says which); the CLIP
is ``world-guide`` (random weights of its architecture if absent). Statistics go to a temporary cache folder so
the preprocessing is measured. ``--quick`` runs every method short (a smoke run; its ratios mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipkit.guidance.clip import RANDOM, load_clip
from clipkit.guidance.errors import WeightsNotFoundError
from clipkit.guidance.prompts import IMAGENET_TEMPLATES
from clipkit.methods.stylegan.checkpoints import save_generator
from clipkit.methods.stylegan.editing import CACHE_ENV
from clipkit.methods.stylegan.global_directions import global_directions
from clipkit.methods.stylegan.models import get_generator, resolve_generator
from clipkit.methods.stylegan.nada import nada
from clipkit.methods.stylegan.network import Generator
from clipkit.methods.stylegan.styleclip_mapper import styleclip_mapper_train
from clipkit.methods.stylegan.styleclip_optimise import styleclip_optimise
from clipkit.methods.stylegan.stylemc import stylemc

WORLD = dict(size=64, style_dim=256, n_mlp=2, channels={4: 128, 8: 128, 16: 64, 32: 32, 64: 16})
PAPER_1024 = dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)
PAPER_CHANNELS_1024 = 6048  # conv (non-ToRGB) S channels of a 1024 px config-f generator
PAPER_IMAGES = 100


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn, repeats: int) -> float:
    return statistics.median(timed(fn)[1] for _ in range(repeats))


def generator_file(tmp: Path) -> tuple[str, str]:
    try:
        return resolve_generator("world-stylegan2"), "world-stylegan2 (trained)"
    except WeightsNotFoundError:
        g = Generator(**WORLD, seed=0).eval()
        g.set_latent_avg(g.mean_latent(4096))
        return str(save_generator(tmp / "world-arch-random.safetensors", g)), \
            "random weights, world-stylegan2's architecture (the world generator is not installed)"


@torch.no_grad()
def per_image_cost(g: Generator, clip, batch: int, repeats: int = 2) -> tuple[float, float]:
    """(generator, CLIP) seconds per image, the generator unfused (as the preprocessing runs it)."""
    g.set_fused_modconv(False)
    z = torch.randn(batch, g.style_dim, generator=torch.Generator().manual_seed(0))
    styles = g.styles(g.mapping(z))
    images = ((g.synthesis(styles=styles) + 1) / 2).clamp(0, 1)  # warm-up
    clip.encode_image(images)
    t_g = median_time(lambda: g.synthesis(styles=styles), repeats) / batch
    t_c = median_time(lambda: clip.encode_image(images), repeats) / batch
    return t_g, t_c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on busy shared cores more threads spin-wait)")
    ap.add_argument("--quick", action="store_true", help="short runs of every method (smoke test)")
    ap.add_argument("--no-1024", action="store_true", help="skip the 1024 px forward behind the extrapolation")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="clipkit-bench-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    os.environ[CACHE_ENV] = str(tmp / "cache")
    path, which = generator_file(tmp)
    try:
        clip, clip_weights = load_clip("world-guide", None, "cpu"), "trained"
    except WeightsNotFoundError:
        clip, clip_weights = load_clip("world-guide", RANDOM, "cpu"), "random"
    g = get_generator(path, "cpu")
    q = args.quick
    steps = {"optimise": 30 if q else 300, "mapper": 50 if q else 1000, "nada": 20 if q else 300,
             "find_seeds": 32 if q else 128, "stat_images": 2 if q else 8}
    common = dict(generator=path, clip=clip, progress=False)
    print(f"generator: {which}; CLIP world-guide ({clip_weights}); {args.threads} thread(s)"
          + ("; QUICK run" if q else ""))
    out: dict = {"generator": which, "threads": args.threads, "quick": q, "steps": steps}

    r, wall = timed(lambda: styleclip_optimise(steps=steps["optimise"], prompt="a photo on a striped background",
                                               **common))
    out["optimise_s"] = r.timings["optimise_s"]
    print(f"StyleCLIP optimisation, {steps['optimise']} steps: {out['optimise_s']:.2f} s")

    r, _ = timed(lambda: global_directions(stat_images=steps["stat_images"], **common))
    t = r.timings
    out["gd_stats"] = {"moments_s": t["moments_s"], "channels_s": t["channels_s"], "s_per_channel": t["s_per_channel"],
                       "stat_images": steps["stat_images"], "channels": int(sum(
                           c for (n, c) in g.style_layers if not n.startswith("to_rgb")))}
    print(f"global directions, preprocessing (once): moments {t['moments_s']:.1f} s + channels {t['channels_s']:.1f} s "
          f"({out['gd_stats']['channels']} channels x {steps['stat_images']} images x 2; "
          f"{1000 * t['s_per_channel']:.1f} ms per channel)")
    pairs = [("a bright photo", "a dark photo"), ("a photo of a circle", "a photo of a star"),
             ("a photo of a red shape", "a photo of a blue shape")]
    fresh = []
    for neutral, target in pairs[: args.repeats]:  # each pair new: its text is encoded in the timed call
        fresh.append(timed(lambda n=neutral, t=target: global_directions(
            neutral=n, target=t, stat_images=steps["stat_images"], count=1, **common))[1])
    cached = median_time(lambda: global_directions(neutral=pairs[0][0], target=pairs[0][1], count=1,
                                                   stat_images=steps["stat_images"], **common), args.repeats)
    out["gd_apply_s"], out["gd_apply_cached_text_s"] = statistics.median(fresh), cached
    print(f"global-direction edit (1 image): {out['gd_apply_s']:.3f} s with a new prompt pair (its 2 x "
          f"{len(IMAGENET_TEMPLATES)} template sentences encoded), {cached:.3f} s with its text cached (moving the "
          f"strength or threshold)")

    found = stylemc(find_seeds=steps["find_seeds"], **common)
    out["stylemc_find_s"] = found.timings["optimise_s"]
    direction = found.artifacts["direction"]
    out["stylemc_apply_s"] = median_time(lambda: stylemc(direction=direction, count=1, generator=path,
                                                         progress=False), args.repeats)
    print(f"StyleMC: direction found over {steps['find_seeds']} seeds in {out['stylemc_find_s']:.2f} s "
          f"({found.settings['gradient_steps']} steps, {found.settings['pruned_channels']} channels pruned); "
          f"apply (1 image) {out['stylemc_apply_s']:.3f} s")

    r = styleclip_mapper_train(steps=steps["mapper"], **common)
    out["mapper_train_s"] = r.timings["optimise_s"]
    print(f"StyleCLIP mapper training, {steps['mapper']} steps x batch 2: {out['mapper_train_s']:.1f} s")

    r = nada(steps=steps["nada"], count=1, **common)
    out["nada_s"] = r.timings["optimise_s"]
    print(f"StyleGAN-NADA, {steps['nada']} steps (layers trained: {', '.join(r.settings['trained_layers'])}): "
          f"{out['nada_s']:.1f} s")

    out["ratio_optimise_over_gd"] = out["optimise_s"] / out["gd_apply_s"]
    out["ratio_optimise_over_gd_cached_text"] = out["optimise_s"] / cached
    out["ratio_optimise_over_stylemc_apply"] = out["optimise_s"] / out["stylemc_apply_s"]
    out["ratio_find_over_mapper"] = out["stylemc_find_s"] / out["mapper_train_s"]
    print(f"\nglobal-direction edit: {out['ratio_optimise_over_gd']:.0f}x faster than latent optimisation with a "
          f"new prompt pair, {out['optimise_s'] / cached:.0f}x with its text cached (target >= 100x)")
    print(f"StyleMC apply: {out['ratio_optimise_over_stylemc_apply']:.0f}x faster than latent optimisation "
          f"(target >= 100x)")
    print(f"StyleMC finding / mapper training: {out['ratio_find_over_mapper']:.3f} (target <= 0.1)")

    if not args.no_1024:
        world_g, world_c = per_image_cost(Generator(**WORLD, seed=0).eval().requires_grad_(False), clip, 16)
        big = Generator(**PAPER_1024, seed=0).eval().requires_grad_(False)
        vit = load_clip("ViT-B-32", RANDOM, "cpu")
        big_g, big_c = per_image_cost(big, vit, 1, repeats=1)
        ratio = (big_g + big_c) / (world_g + world_c)
        per_channel = out["gd_stats"]["s_per_channel"] * ratio * PAPER_IMAGES / steps["stat_images"]
        total_h = per_channel * PAPER_CHANNELS_1024 / 3600
        out["extrapolation_1024"] = {"world_ms_per_image": 1000 * (world_g + world_c),
                                     "paper1024_ms_per_image": 1000 * (big_g + big_c), "cost_ratio": ratio,
                                     "s_per_channel": per_channel, "hours": total_h}
        print(f"\nper image, generator + CLIP forward: world {1000 * world_g:.1f} + {1000 * world_c:.1f} ms; "
              f"1024 px config-f {1000 * big_g:.0f} + ViT-B/32 {1000 * big_c:.0f} ms (x{ratio:.0f})")
        print(f"EXTRAPOLATION (not measured): a 1024 px generator's statistics with the paper's {PAPER_IMAGES} "
              f"images: {per_channel:.1f} s per channel x {PAPER_CHANNELS_1024} channels = {total_h:.1f} h on "
              f"this CPU, one thread.\n  A lower bound: most of its channels sit in early layers, so reusing the "
              f"layers before a channel saves less there than here.")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
