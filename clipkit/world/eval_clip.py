"""Measure a world CLIP on held-out attribute combinations.

    clipkit eval-world-clip --model world-guide [--n 1000] [--write-card]

Zero-shot ("full" prompts): for each held-out single-object scene and each
attribute, the canonical caption is written once per value of that attribute
with every other word true ("a bright photo of a small red STAR on the left on
a striped blue background") and the model must pick the true value; on a
held-out (shape, colour) pair this tests attributes, not memorised pairs.
"short" prompts name only the attribute ("a photo of a star").  Retrieval:
image->text top-5 among the distinct canonical captions of held-out scenes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from clipkit.world.data import normalize, seeded
from clipkit.world.scene import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    LIGHTINGS,
    POSITIONS,
    SHAPES,
    SIZES,
    SceneSpec,
    describe,
    render_batch,
    rotated,
    sample_scene,
)

VALUES = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES),
          "position": list(POSITIONS), "background": list(BACKGROUNDS), "lighting": list(LIGHTINGS)}
TARGETS = {"colour": 0.95, "shape": 0.90, "size": 0.85, "position": 0.85, "background": 0.85,
           "lighting": 0.85, "retrieval_top5": 0.80}
_SHORT = {
    "colour": "a photo of a {} shape", "shape": "a photo of a {}", "size": "a photo of a {} shape",
    "position": "a photo of a shape {}", "background": "a photo of a shape on a {} background",
    "lighting": "a {} photo of a shape",
}
_SHORT_WORD = {"position": {"left": "on the left", "right": "on the right", "top": "at the top",
                            "bottom": "at the bottom", "centre": "in the centre"},
               "background": {"plain": "plain", "gradient": "gradient", "stripes": "striped",
                              "dots": "dotted", "checker": "checkered"}}


def with_value(scene: SceneSpec, attribute: str, value: str) -> SceneSpec:
    """`scene` with one attribute set (object attributes act on the first object)."""
    if attribute in ("colour", "shape", "size", "position"):
        obj = replace(scene.objects[0], **{attribute: value})
        return replace(scene, objects=(obj,) + scene.objects[1:])
    return replace(scene, **{attribute: value})


def scenes_for(split: str, n: int, seed: int = 1234, n_objects: int | None = 1) -> list[SceneSpec]:
    """A fixed evaluation set (its own seed stream, disjoint from training seeds).

    A split named "<split>-turned" is that split's set with each scene turned by a random angle: do shape
    names hold at any rotation (`--rotate` in training)?"""
    base, turned = split.removesuffix("-turned"), split.endswith("-turned")
    g = seeded("eval", seed, base, n_objects)
    scenes = [sample_scene(g, base, n_objects) for _ in range(n)]
    return [rotated([s], g)[0] for s in scenes] if turned else scenes


@torch.no_grad()
def _encode_text(model, tokenizer, texts: list[str], batch: int = 1024) -> torch.Tensor:
    feats = [model.encode_text(tokenizer(texts[i:i + batch])) for i in range(0, len(texts), batch)]
    return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)


@torch.no_grad()
def _encode_images(model, scenes: list[SceneSpec], size: int, batch: int = 256) -> torch.Tensor:
    feats = [model.encode_image(normalize(render_batch(scenes[i:i + batch], size)))
             for i in range(0, len(scenes), batch)]
    return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)


def _image_size(model) -> int:
    size = getattr(model.visual, "image_size", 64)
    return size[0] if isinstance(size, (tuple, list)) else int(size)


@torch.no_grad()
def zero_shot(model, tokenizer, scenes: list[SceneSpec],
              attributes: tuple[str, ...] = ATTRIBUTES) -> dict[str, float]:
    """Per-attribute accuracy with full prompts (other attributes true) and short prompts."""
    img = _encode_images(model, scenes, _image_size(model))
    res = {}
    for attr in attributes:
        values = VALUES[attr]
        truth = torch.tensor([values.index(_value(s, attr)) for s in scenes])
        prompts = [describe(with_value(s, attr, v)) for s in scenes for v in values]
        txt = _encode_text(model, tokenizer, prompts).view(len(scenes), len(values), -1)
        pred = torch.einsum("nd,nvd->nv", img, txt).argmax(-1)
        res[attr] = (pred == truth).float().mean().item()
        short = [_SHORT[attr].format(_SHORT_WORD.get(attr, {}).get(v, v)) for v in values]
        pred = (img @ _encode_text(model, tokenizer, short).T).argmax(-1)
        res[f"{attr}_short"] = (pred == truth).float().mean().item()
    return res


def _value(scene: SceneSpec, attr: str) -> str:
    if attr in ("colour", "shape", "size", "position"):
        return getattr(scene.objects[0], attr)
    return getattr(scene, attr)


@torch.no_grad()
def retrieval(model, tokenizer, scenes: list[SceneSpec]) -> dict[str, float]:
    """Image->text top-1/top-5 among the distinct canonical captions of `scenes`."""
    captions = [describe(s) for s in scenes]
    unique = sorted(set(captions))
    truth = torch.tensor([unique.index(c) for c in captions])
    sims = _encode_images(model, scenes, _image_size(model)) @ _encode_text(model, tokenizer, unique).T
    top = sims.topk(5, dim=-1).indices
    return {"retrieval_top1": (top[:, 0] == truth).float().mean().item(),
            "retrieval_top5": (top == truth[:, None]).any(-1).float().mean().item(),
            "retrieval_gallery": float(len(unique))}


def evaluate(model, tokenizer, n_scenes: int = 1000, n_retrieval: int = 1000,
             split: str = "heldout") -> dict[str, float]:
    """Zero-shot and retrieval metrics on a fixed evaluation set of `split`."""
    was_training = model.training
    model.eval()
    res = zero_shot(model, tokenizer, scenes_for(split, n_scenes))
    res.update(retrieval(model, tokenizer, scenes_for(split, n_retrieval, n_objects=None)))
    model.train(was_training)
    return res


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per metric, one column per evaluated split."""
    cols = list(rows)
    lines = ["| metric | target | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    metrics = [*ATTRIBUTES, "retrieval_top5", "retrieval_top1", *(f"{a}_short" for a in ATTRIBUTES)]
    for m in metrics:
        target = f"≥ {TARGETS[m]:.0%}" if m in TARGETS else ""
        cells = []
        for c in cols:
            v = rows[c].get(m)
            ok = "" if m not in TARGETS or c != "heldout" else (" ✓" if v >= TARGETS[m] else " ✗")
            cells.append(f"{100 * v:.1f} %{ok}" if v is not None else "")
        lines.append(f"| {m} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _segment(run_dir: Path) -> tuple[str, dict, dict]:
    """(command, args, done) of one training run directory, as the card lists it."""
    done = json.loads((run_dir / "done.json").read_text()) if (run_dir / "done.json").exists() else {}
    args = json.loads((run_dir / "args.json").read_text()) if (run_dir / "args.json").exists() else {}
    if not args:
        return "(run directory not found)", args, done
    opts = ["model", "init", "steps", "batch_size", "lr", "warmup", "free_colour", "shade", "oversize", "rotate",
            "noise", "vary", "easy", "easy_steps", "seed", "max_minutes", "threads", "workers"]
    unset = {k: ("0",) for k in ("easy_steps", "max_minutes")} | {"workers": ("1",)}  # 1 is the default
    parts = [f"--{k.replace('_', '-')} {args[k]}" for k in opts
             if k in args and args[k] not in (None, "None", "", "0.0", *unset.get(k, ()))]
    return "clipkit train world-clip " + " ".join(parts) + f" --out {run_dir}", args, done


def card_text(name: str, weights: Path, run_dirs: list[Path] | Path, eval_block: str, notes: str = "") -> str:
    """The whole model card: what it is, data, training facts read from the runs (in order), accuracy."""
    from clipkit.world.models import CONFIG_DIR
    from clipkit.world.scene import HELDOUT

    run_dirs = [run_dirs] if isinstance(run_dirs, Path) else list(run_dirs)
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    segments = [_segment(d) for d in run_dirs]
    done = segments[-1][2] if segments else {}
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tower = (f"ViT, {v['layers']} layers, width {v['width']}, patch {v['patch_size']}"
             if v.get("patch_size") else f"open_clip ModifiedResNet, width {v['width']}, layers {v['layers']}")
    held = ", ".join(f"{c} {s}" for s, c in sorted(HELDOUT))
    size = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    rows = []
    for cmd, args, d in segments:
        rows.append(f"| `{cmd}` | {d.get('steps', '?')} | {args.get('batch_size', '?')} | "
                    f"{d.get('minutes', float('nan')):.1f} | {d.get('cpu_minutes', float('nan')):.1f} |")
    total_wall = sum(d.get("minutes", 0.0) for _, _, d in segments)
    total_cpu = sum(d.get("cpu_minutes", 0.0) for _, _, d in segments)
    chain = ("\nEach segment after the first starts from the previous one's weights (`--init`) with a fresh "
             "optimiser and schedule." if len(segments) > 1 else "")
    training = "\n".join(["| segment (in order) | steps reached | batch | wall min | CPU min |",
                          "|---|---|---|---|---|", *rows,
                          f"| total | | | {total_wall:.1f} | {total_cpu:.1f} |"])
    return f"""# {name}

A small CLIP trained from scratch on the project's procedural captioned world
(`world/scene.py`), so that guidance and tests have a model that really knows
what "a red circle", "striped", "backlit" mean.  It knows nothing outside that
world.

## Use

```python
import open_clip
open_clip.add_model_config("world/model_configs")
model, _, preprocess = open_clip.create_model_and_transforms(
    "{name}", pretrained="world/models/{name}.safetensors")
tokenizer = open_clip.get_tokenizer("{name}")  # open_clip's BPE, context {t['context_length']}
```

Images: 64 x 64, open_clip's default (OpenAI) mean/std.  Weights: fp16
safetensors, keys exactly `model.state_dict()`, {size:.1f} MB.

## Architecture

- image tower: {tower}, image size {v['image_size']}
- text tower: transformer, {t['layers']} layers, width {t['width']}, {t['heads']} heads,
  open_clip's 49,408-token vocabulary (prompts tokenize as with published CLIPs)
- embedding dimension {cfg['embed_dim']}; {done.get('params', 0) / 1e6:.2f} M parameters

## Data

Rendered on the fly, deterministic per seed: one (75 %) or two objects; 6 shapes,
11 colours, 2 sizes, 5 positions (or a left-of / above relation for two
objects), 5 muted background patterns with a colour, 3 lightings (bright,
dark, backlit = brightened background and under-exposed object).  Captions come
from many templates naming random subsets of the attributes.  Batches are made
of groups of 4 scenes that differ from a base scene in one attribute (hard
negatives; for two objects also swapped colours), with captions that name the
varied attributes.  With `--free-colour`, the objects of some groups are
painted in random off-palette colours whose captions do not name a colour, so
shape must be read regardless of colour; such a colour counts as its nearest
named colour for the held-out rule.  With `--shade R`, the objects of the
other training groups take a random shade of their named colour (an RGB offset
of at most R, below half the distance between any two named colours), so a
colour word covers a neighbourhood of its colour, not one point.  With
`--oversize P`, a share P of the groups draws its large single objects 1.3 to
2 times larger, so they may fill and leave the frame.  A curriculum
(`--easy`) builds a falling share of the groups on easy scenes (one object on
a plain background in bright light) early in training.  Held out of
training: {held}.

## Training

Loss: `open_clip.loss.ClipLoss`; AdamW (wd 0.1, none on embeddings, gains,
biases), warmup then cosine decay, also annealed by a wall-clock budget.{chain}
CPU time counts the training process and its data worker, where it has one.

{training}

## Accuracy

{eval_block}
{notes}
"""


def main(argv: list[str] | None = None) -> None:
    from clipkit.world.models import MODELS_DIR, create

    p = argparse.ArgumentParser(description="Zero-shot and retrieval accuracy of a world CLIP")
    p.add_argument("--model", default="world-guide")
    p.add_argument("--pretrained", default=None, help="weights (default world/models/<model>.safetensors)")
    p.add_argument("--n", type=int, default=1000, help="scenes per evaluation set")
    p.add_argument("--splits", default="heldout,train",
                   help="comma-separated: heldout, train, and either with -turned (scenes at random rotations)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-card", action="store_true", help="put the table into world/models/<model>.md")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--run-dir", type=Path, action="append", default=None,
                   help="training run directory, repeated for segments in order (default runs/<model>)")
    p.add_argument("--notes", type=Path, default=None, help="markdown appended to the card")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    weights = a.pretrained or str(MODELS_DIR / f"{a.model}.safetensors")
    model, _, tokenizer = create(a.model, pretrained=weights)
    t = time.time()
    rows = {s: evaluate(model, tokenizer, a.n, a.n, split=s) for s in a.splits.split(",")}
    text = table(rows)
    print(text)
    print(f"({a.n} scenes per set, {time.time() - t:.0f} s)")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if a.write_card:
        card = MODELS_DIR / f"{a.model}.md"
        block = (f"{text}\n\nColumns: evaluation sets of {a.n} scenes from the held-out combinations "
                 "and from the training distribution (unseen images).  Rows: zero-shot accuracy per "
                 "attribute with full prompts, image->text retrieval among the distinct canonical "
                 "captions, zero-shot with short prompts naming one attribute.  Measured by "
                 f"`clipkit eval-world-clip --model {a.model} --n {a.n}`.")
        notes = a.notes.read_text() if a.notes else ""
        card.write_text(card_text(a.model, Path(weights), a.run_dir or [Path("runs") / a.model], block, notes))
        print(f"wrote {card}")


if __name__ == "__main__":
    main()
