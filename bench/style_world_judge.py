"""What the feed-forward stylizer does to photos, as judged by the world judge (a CLIP that did not guide).

    python bench/style_world_judge.py [--checkpoint clipkit/methods/style/models/world-stylizer.safetensors]

Every content photo is stylised for every prompt of the prompts file; the judge scores output and input at its
64 px.  Prints per prompt the mean gain in cosine similarity to the prompt (output minus input, the baseline of
the same run) and how often the output's largest gain over all prompts is its own prompt, plus the time per image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clipkit.guidance.clip import load_clip
from clipkit.guidance.images import as_tensor, load_image
from clipkit.methods.style.feedforward import SHIPPED_STYLIZER, stylize

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=SHIPPED_STYLIZER)
    p.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "images" / "content")
    p.add_argument("--prompts-file", type=Path, default=ROOT / "generators" / "style" / "world_prompts.txt")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    judge = load_clip("world-judge", device="cpu")
    prompts = [line.strip() for line in a.prompts_file.read_text().splitlines() if line.strip()]
    photos = sorted(x for x in a.photos.iterdir() if x.suffix.lower() in {".jpg", ".jpeg", ".png"})
    with torch.inference_mode():
        text = judge.encode_text(prompts)
    gains = torch.zeros(len(photos), len(prompts), len(prompts))
    seconds = []
    for i, path in enumerate(photos):
        image = load_image(path)
        with torch.inference_mode():
            before = judge.encode_image(F.interpolate(as_tensor(image), size=(64, 64), mode="area"))
        for k, prompt in enumerate(prompts):
            t0 = time.perf_counter()
            out = stylize(image, prompt=prompt, checkpoint=a.checkpoint, size=a.size).images
            seconds.append(time.perf_counter() - t0)
            with torch.inference_mode():
                after = judge.encode_image(F.interpolate(out, size=(64, 64), mode="area"))
            gains[i, k] = ((after - before) @ text.T)[0]
    own = gains.diagonal(dim1=1, dim2=2)
    top = (gains.argmax(-1) == torch.arange(len(prompts))).float()
    print(f"{len(photos)} photos x {len(prompts)} prompts, judged by world-judge")
    print("| prompt | gain | top |\n|---|---|---|")
    for k, prompt in enumerate(prompts):
        print(f"| {prompt} | {float(own[:, k].mean()):+.3f} | {float(top[:, k].mean()):.2f} |")
    print(f"mean gain {float(own.mean()):+.3f}; own gain > 0 for {float((own > 0).float().mean()):.0%}; "
          f"own prompt gains most for {float(top.mean()):.0%}")
    print(f"median time per {a.size} px image: {1000 * sorted(seconds)[len(seconds) // 2]:.0f} ms")


if __name__ == "__main__":
    main()
