"""How often text to image gives what the world judge (a CLIP that did not guide) calls the prompt's object.

    python experiments/t2i_world_judge.py [--prompt "a red circle"] [--batch 8] [--set init_std=0.1 --set noise=0.5]

Runs `generate` with the guide (world-guide) once with the defaults (the baseline of the same run) and once per
`--set` variant, then ranks "a <colour> <shape>" among the 66 one-object captions of the world with the judge.
Prints per variant: how many images the judge ranks first, the median rank, the mean probability, two
judge-free pixel measures of the figure (the pixels nearest the target's named colour): its share of the image
and the IoU with a disc of its area at its centroid (1 = a disc; the guide's upright "a red circle" blob,
flat on top and pointed below, scores about 0.7), and the seconds per run, so a change of recipe is measured
against the defaults on the same seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from clipkit.guidance.clip import load_clip
from clipkit.methods.image.generate import generate
from clipkit.world.scene import COLOURS, ONE_OBJECT_CAPTIONS

ROOT = Path(__file__).resolve().parents[1]

ONE_OBJECT = list(ONE_OBJECT_CAPTIONS)


def parse_set(items: list[str]) -> dict[str, object]:
    """["init_std=0.1", "noise=0.5"] -> {"init_std": 0.1, "noise": 0.5} (values read as JSON when they parse)."""
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def figure_stats(images: torch.Tensor, colour: str) -> tuple[float, float]:
    """(mean share of the image, mean disc IoU) of the pixels whose nearest named colour is `colour`."""
    palette = torch.tensor(list(COLOURS.values()))
    nearest = ((images.permute(0, 2, 3, 1)[..., None, :] - palette) ** 2).sum(-1).argmin(-1)
    masks = (nearest == list(COLOURS).index(colour)).float()
    yy, xx = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in masks.shape[1:]), indexing="ij")
    ious = []
    for m in masks:
        area = m.sum()
        if area < 1:
            ious.append(0.0)
            continue
        cy, cx = (m * yy).sum() / area, (m * xx).sum() / area
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= area / torch.pi).float()
        ious.append(float((disc * m).sum() / torch.maximum(disc, m).sum()))
    return float(masks.mean()), statistics.fmean(ious)


def load_judges(extra: list[str]) -> dict[str, object]:
    """The shipped judge plus judges from weight files, named by their run folders."""
    judges = {"shipped judge": load_clip("world-judge", device="cpu")}
    judges.update({Path(j).parent.name: load_clip("world-judge", pretrained=j, device="cpu") for j in extra})
    return judges


def judged_cells(images: torch.Tensor, judges: dict[str, object], prompt: str) -> list[str]:
    """Table cells for one batch: per judge how many images rank `prompt` first among the one-object
    captions, then the judge-free figure share and disc IoU of the prompt's colour."""
    k = ONE_OBJECT.index(prompt)
    cells = []
    for judge in judges.values():
        prob = judge.caption_probabilities(images, ONE_OBJECT)
        cells.append(f"{sum(int(row.argmax()) == k for row in prob)}/{len(prob)}")
    share, iou = figure_stats(images, prompt.split()[1])
    return [*cells, f"{share:.2f}", f"{iou:.2f}"]


def save_strip(images: torch.Tensor, path: Path) -> None:
    """The batch side by side in one PNG, to look at what the numbers describe."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    strip = torch.cat(list(images.clamp(0, 1)), dim=-1)  # (3, H, B*W)
    Image.fromarray((strip.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)


def prior_bench_parser(description: str, batch: int) -> argparse.ArgumentParser:
    """The arguments the generator-prior benches share: prompt, batch, seed, model, judges, strips, threads."""
    from clipkit.methods.diffusion.latent_model import DEFAULT_LATENT_MODEL

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--prompt", default="a red circle")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diffusion-model", default=DEFAULT_LATENT_MODEL, help="latent diffusion model name or folder")
    p.add_argument("--judge", action="append", default=[], help="extra judge weights besides the shipped judge")
    p.add_argument("--save", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    return p


def parse_prior_bench(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, refuse a prompt the judges cannot rank, and set the thread count."""
    a = p.parse_args()
    if a.prompt not in ONE_OBJECT:
        p.error(f"--prompt must be a one-object caption such as 'a red circle'; got {a.prompt!r}")
    torch.set_num_threads(a.threads)
    return a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red circle")
    p.add_argument("--target", default="", help="the caption to rank (default: the prompt)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="K=V[,K=V]",
                   help="a variant: settings overrides, comma-separated; repeat for more variants")
    p.add_argument("--guide", default=None, help="guide weights (default: the shipped world-guide)")
    p.add_argument("--judge", default=None, help="judge weights (default: the shipped world-judge)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", type=Path, default=None, help="write each variant's images as one PNG strip here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    target = a.target or a.prompt
    if target not in ONE_OBJECT:
        p.error(f"--target must be one of the one-object captions, e.g. 'a red circle'; got {target!r}")
    guide = load_clip("world-guide", pretrained=a.guide, device="cpu")
    judge = load_clip("world-judge", pretrained=a.judge, device="cpu")
    k = ONE_OBJECT.index(target)
    print(f"prompt {a.prompt!r}, batch {a.batch}, seed {a.seed}; judge ranks {target!r} among {len(ONE_OBJECT)}")
    colour = target.split()[1]
    print("| variant | first | median rank | mean p | figure share | disc IoU | s/run |\n|---|---|---|---|---|---|---|")
    for variant in [""] + a.set:
        overrides = parse_set([x for x in variant.split(",") if x])
        t0 = time.perf_counter()
        run = {"prompt": a.prompt, "batch": a.batch, "seed": a.seed, **overrides}
        images = generate(clip=guide, progress=False, **run).images
        seconds = time.perf_counter() - t0
        prob = judge.caption_probabilities(images, ONE_OBJECT)
        ranks = [int((row > row[k]).sum()) + 1 for row in prob]
        share, iou = figure_stats(images, colour)
        if a.save is not None:
            save_strip(images, a.save / f"{variant.replace('=', '-').replace(',', '_') or 'defaults'}.png")
        print(f"| {variant or 'defaults'} | {ranks.count(1)}/{len(ranks)} | {statistics.median(ranks):g} "
              f"| {float(prob[:, k].mean()):.2f} | {share:.2f} | {iou:.2f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
