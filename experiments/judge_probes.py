"""How world CLIPs read red circles off the training distribution: blurred, small, huge and cut by the frame.

    python experiments/judge_probes.py [--judge runs/shade-judge/final.safetensors --judge runs/fast.safetensors]

Held-out accuracy is measured on rendered scenes; a judge of guided images also meets soft edges, odd sizes and
shapes that leave the frame.  Each probe is one red circle on a plain white background, changed one way; every
model (the shipped guide and judge, plus each ``--judge`` file) ranks the 66 one-object captions.  Prints the
caption it ranks first and its probability of "a red circle"; the clean circle is the baseline of the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import kornia
import torch

from clipkit.guidance.clip import load_clip
from clipkit.world.scene import ONE_OBJECT_CAPTIONS, ObjectSpec, SceneSpec, render_batch

ROOT = Path(__file__).resolve().parents[1]

CAPTIONS = list(ONE_OBJECT_CAPTIONS)
TARGET = "a red circle"


def _circle(size: str = "large", scale: float = 1.0, dy: float = 0.0) -> SceneSpec:
    return SceneSpec((ObjectSpec("circle", "red", size, "centre", scale=scale, dy=dy),), "plain", "white", "bright")


def _blur(sigma: float):
    k = 2 * round(3 * sigma) + 1
    return lambda x: kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma))


PROBES = {  # name -> (scene, pixel transform)
    "clean, large": (_circle(), None),
    "blur sigma 2": (_circle(), _blur(2.0)),
    "blur sigma 4": (_circle(), _blur(4.0)),
    "small": (_circle("small"), None),
    "1.6x, low": (_circle(scale=1.6, dy=0.2), None),
    "2.2x, cut by the frame": (_circle(scale=2.2, dy=0.25), None),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judge", action="append", default=[], help="more world-judge weights to compare (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = {"guide": load_clip("world-guide", device="cpu"), "judge": load_clip("world-judge", device="cpu")}
    for path in a.judge:
        models[Path(path).parent.name or path] = load_clip("world-judge", pretrained=path, device="cpu")
    k = CAPTIONS.index(TARGET)
    images = []
    for scene, transform in PROBES.values():
        x = render_batch([scene])
        images.append(transform(x) if transform else x)
    batch = torch.cat(images)
    print(f"first-ranked caption (p of '{TARGET}') among {len(CAPTIONS)} one-object captions")
    print("| probe | " + " | ".join(models) + " |\n|---|" + "---|" * len(models))
    rows = {name: [] for name in PROBES}
    for model in models.values():
        prob = model.caption_probabilities(batch, CAPTIONS)
        for name, row in zip(PROBES, prob):
            rows[name].append(f"{CAPTIONS[int(row.argmax())].removeprefix('a ')} ({float(row[k]):.2f})")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
