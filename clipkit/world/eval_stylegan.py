"""Measure the world StyleGAN2 against the world it learned, and beside the world latent diffusion model.

    python -m clipkit.world.eval_stylegan [--model PATH] [--n-judge 1000] [--n-fd 5000] [--write-card --run-dir RUN]

(a) Judge: ``--n-judge`` samples at psi = 1 are scored by the world judge (a CLIP that neither model saw in
    training) against every one-object caption ("a red circle" ... ``ONE_OBJECT_CAPTIONS``, a softmax at the
    judge's logit scale). A sample passes when some caption gets p >= 0.5; the argmax captions' shapes and colours
    show whether every shape and every colour is drawn. The same numbers for as many renders say what the judge
    gives the real thing. The judge is confident on blobs too, so the share of images where the world guide (a
    second world CLIP) picks the same caption is measured beside it.
(b) Fréchet distance (FD; Heusel et al.'s FID formula) between Gaussians fitted to the judge's unit image
    embeddings (128-d) of ``--n-fd`` renders of the training distribution and of as many samples: of this
    generator, of the world LDM unguided (``guidance_scale`` 0, ``cfg_scale`` 0: its unconditioned samples, DDIM
    50 steps, decoded at 32 px and resized to 64), and of a second, independent set of renders (the floor that
    sampling noise leaves at this n). The LDM was trained on 32 px scenes of one or two objects, so it is also
    measured against renders of that distribution shown the same way (32 px, resized bilinearly to 64). All in
    one run, with the n printed.
(c) A grid of 64 samples (psi = 1) as PNG, for the card.
(d) Inversion (``--n-invert``): renders the generator never trained on (a fresh seed of the training
    distribution, and scenes of the held-out (shape, colour) pairs it never saw) are inverted into W+ by the
    ``invert`` method at its defaults; the reconstruction's PSNR, and whether the judge's best one-object caption
    (shape and colour) of the inverted image is that of the original.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.world.data import seeded
from clipkit.world.models import MODELS_DIR
from clipkit.world.scene import COLOURS, ONE_OBJECT_CAPTIONS, SHAPES, render_batch, sample_scene
from clipkit.world.train_stylegan import DEFAULT_MODEL_OUT, MODEL_NAME, save_grid, world_scenes

CARD = MODELS_DIR / f"{MODEL_NAME}.md"
GRID = MODELS_DIR / f"{MODEL_NAME}-grid.png"
INVERSION_GRID = MODELS_DIR / f"{MODEL_NAME}-inversion.png"


# ==================================================================================================== image sets
def renders(n: int, seed: int, tag: str = "renders", batch: int = 500) -> Tensor:
    """``n`` one-object renders of the training distribution (train split), 64 px, [0, 1]; own seed stream."""
    g = seeded("stylegan-eval", seed, tag)
    return torch.cat([render_batch(world_scenes(g, min(batch, n - i)), 64) for i in range(0, n, batch)])


def ldm_data_renders(n: int, seed: int, batch: int = 500) -> Tensor:
    """``n`` renders of the world LDM's training distribution (one or two objects, train split) as the LDM shows
    its samples: 32 px, resized bilinearly to 64."""
    g = seeded("stylegan-eval", seed, "ldm-data")
    out = []
    for i in range(0, n, batch):
        small = render_batch([sample_scene(g, "train") for _ in range(min(batch, n - i))], 32)
        out.append(F.interpolate(small, size=64, mode="bilinear", align_corners=False).clamp(0, 1))
    return torch.cat(out)


def load_model(path: str | Path):
    """The generator of a StyleGAN file, on the CPU, with the per-batch convolution path (faster on CPUs)."""
    from clipkit.methods.stylegan.checkpoints import load_stylegan
    from clipkit.methods.stylegan.network import ModulatedConv2d

    G = load_stylegan(path)
    for m in G.modules():
        if isinstance(m, ModulatedConv2d):
            m.fused = False  # same math, float rounding aside
    return G


@torch.no_grad()
def stylegan_samples(G, n: int, seed: int, psi: float = 1.0, batch: int = 250) -> Tensor:
    """``n`` samples in [0, 1] from z drawn with ``seed``, truncation ``psi``, the stored (const) noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=g)
    out = [G(z[i:i + batch].to(G.device), truncation=psi).cpu() for i in range(0, n, batch)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def ldm_samples(n: int, seed: int, batch: int = 64, steps: int = 50) -> Tensor:
    """``n`` unguided world-LDM samples (no CLIP guidance, no text: cfg 0), 64 px, [0, 1]; run k has seed + k."""
    from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion
    from clipkit.methods.diffusion.latent_model import get_latent_model

    ldm = get_latent_model()
    out = []
    for k, i in enumerate(range(0, n, batch)):
        r = clip_guided_diffusion(guidance_scale=0.0, cfg_scale=0.0, batch=min(batch, n - i), seed=seed + k,
                                  steps=steps, size=64, latent_model=ldm, progress=False)
        out.append(r.images.cpu())
    return torch.cat(out)


# ==================================================================================================== measures
@torch.no_grad()
def embed(clip, images: Tensor, batch: int = 500) -> Tensor:
    """The CLIP's unit image embeddings (n, D) of images in [0, 1]."""
    return torch.cat([clip.encode_image(images[i:i + batch]).cpu() for i in range(0, len(images), batch)])


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of the Gaussians fitted to two sets of vectors.

    The trace of the matrix square root is taken as the sum of the square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2) (symmetric, PSD: same eigenvalues as S_a S_b), in float64.
    """
    a, b = a.double(), b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (n >= 2, D) sets of the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root_a @ s_b @ root_a
    tr_root = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * tr_root)


def one_object_scores(clip, images: Tensor, threshold: float = 0.5, batch: int = 500) -> dict:
    """The judge's softmax over the one-object captions: share of images whose best caption has p >= threshold,
    the shapes and colours of the argmax captions (counts, and whether each appears)."""
    probs = torch.cat([clip.caption_probabilities(images[i:i + batch], ONE_OBJECT_CAPTIONS).cpu()
                       for i in range(0, len(images), batch)])
    best_p, best = probs.max(1)
    words = [ONE_OBJECT_CAPTIONS[int(k)].split() for k in best]  # "a red circle" -> a, red, circle
    shapes = Counter(w[2] for w in words)
    colours = Counter(w[1] for w in words)
    confident = best_p >= threshold
    conf_shapes = Counter(w[2] for w, c in zip(words, confident) if c)
    conf_colours = Counter(w[1] for w, c in zip(words, confident) if c)
    return {
        "n": len(images),
        "pass": float(confident.float().mean()),
        "mean_best_p": float(best_p.mean()),
        "shapes": {s: shapes.get(s, 0) for s in SHAPES},
        "colours": {c: colours.get(c, 0) for c in COLOURS},
        "every_shape": all(shapes.get(s, 0) > 0 for s in SHAPES),
        "every_colour": all(colours.get(c, 0) > 0 for c in COLOURS),
        "every_shape_confident": all(conf_shapes.get(s, 0) > 0 for s in SHAPES),
        "every_colour_confident": all(conf_colours.get(c, 0) > 0 for c in COLOURS),
    }


@torch.no_grad()
def argmax_captions(clip, images: Tensor, batch: int = 500) -> Tensor:
    """Index into ``ONE_OBJECT_CAPTIONS`` of each image's best caption by ``clip``."""
    return torch.cat([clip.caption_probabilities(images[i:i + batch], ONE_OBJECT_CAPTIONS).argmax(1).cpu()
                      for i in range(0, len(images), batch)])


def evaluate(model: str | Path = DEFAULT_MODEL_OUT, n_judge: int = 1000, n_fd: int = 5000, n_ldm: int | None = None,
             seed: int = 0, grid: Path | None = GRID, ldm: bool = True, n_invert: int = 0,
             invert_steps: int | None = None, inversion_grid: Path | None = INVERSION_GRID) -> dict:
    """Every measure of the module docstring; returns them as a dict (also what the card shows)."""
    from clipkit.guidance.clip import load_clip

    t0 = time.time()
    G = load_model(model)
    judge = load_clip("world-judge", device="cpu")
    res: dict = {"model": str(model), "seed": seed}
    if grid is not None:
        save_grid(stylegan_samples(G, 64, seed + 7), grid)
        res["grid"] = str(grid)
    samples, real = stylegan_samples(G, n_judge, seed), renders(n_judge, seed, "judge")
    res["judge_samples"] = one_object_scores(judge, samples)
    res["judge_renders"] = one_object_scores(judge, real)
    # a second opinion: the judge is confident on blobs too (an untrained generator's blobs passed (a) 90 % of
    # the time), so how often the world guide, another CLIP, names the same caption
    guide = load_clip("world-guide", device="cpu")
    for key, images in (("samples", samples), ("renders", real)):
        res[f"guide_agrees_{key}"] = float((argmax_captions(judge, images) == argmax_captions(guide, images))
                                           .float().mean())
    t1 = time.time()
    ref = embed(judge, renders(n_fd, seed, "fd-a"))
    res["n_fd"] = n_fd
    res["fd_renders_floor"] = frechet_distance(ref, embed(judge, renders(n_fd, seed, "fd-b")))
    res["fd_stylegan"] = frechet_distance(ref, embed(judge, stylegan_samples(G, n_fd, seed + 1)))
    res["seconds_stylegan"] = round(time.time() - t1, 1)
    if ldm:
        n_ldm = n_ldm or n_fd
        t2 = time.time()
        ldm_emb = embed(judge, ldm_samples(n_ldm, seed + 1000))
        res["n_ldm"] = n_ldm
        res["fd_ldm"] = frechet_distance(ref, ldm_emb)
        res["fd_ldm_vs_its_data"] = frechet_distance(embed(judge, ldm_data_renders(n_fd, seed)), ldm_emb)
        res["seconds_ldm"] = round(time.time() - t2, 1)
    if n_invert:
        res["inversion"] = [inversion_scores(G, judge, n_invert, seed, split, invert_steps)
                            for split in ("train", "heldout")]
        examples = torch.cat([r.pop("examples") for r in res["inversion"]])
        if inversion_grid is not None:
            save_grid(examples, inversion_grid, nrow=8)
            res["inversion_grid"] = str(inversion_grid)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def inversion_scores(G, judge, n: int, seed: int, split: str, steps: int | None = None) -> dict:
    """Invert ``n`` one-object renders of ``split`` ("train": a seed no training run drew; "heldout": the
    held-out pairs) with the ``invert`` method; PSNR per image and the judge's agreement on shape and colour."""
    from clipkit.guidance.clip import load_clip
    from clipkit.methods.stylegan.invert import invert

    g = seeded("stylegan-eval", seed, "invert", split)
    scenes = [sample_scene(g, split, n_objects=1) for _ in range(n)]
    originals = render_batch(scenes, 64)
    guide = load_clip("world-guide", device="cpu")  # the invert method's perceptual CLIP (its default)
    overrides = {"steps": steps} if steps else {}
    t0 = time.time()
    inverted, psnrs = [], []
    for i in range(n):
        r = invert(originals[i:i + 1], clip=guide, progress=False, generator=G, seed=seed + i, **overrides)
        inverted.append(r.images[:1])
        psnrs.append(float(r.extras["psnr"]))
    inverted_t = torch.cat(inverted).float()
    before, after = argmax_captions(judge, originals), argmax_captions(judge, inverted_t)
    truth = torch.tensor([ONE_OBJECT_CAPTIONS.index(f"a {s.objects[0].colour} {s.objects[0].shape}")
                          for s in scenes])
    p = torch.tensor(psnrs)
    return {"split": split, "n": n, "steps": steps or "default", "psnr_mean": float(p.mean()),
            "psnr_median": float(p.median()), "psnr_min": float(p.min()),
            "share_psnr_24": float((p >= 24).float().mean()),
            "judge_agrees": float((before == after).float().mean()),
            "judge_original_true": float((before == truth).float().mean()),
            "judge_inverted_true": float((after == truth).float().mean()),
            "seconds_per_image": round((time.time() - t0) / n, 2),
            "examples": torch.stack([originals[:8], inverted_t[:8]], 1).flatten(0, 1)}


# ==================================================================================================== card
def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def results_block(res: dict) -> str:
    """The measured numbers as markdown."""
    js, jr = res["judge_samples"], res["judge_renders"]
    n_ldm = res.get("n_ldm", res["n_fd"])
    lines = [
        f"Measured by `python -m clipkit.world.eval_stylegan --n-judge {js['n']} --n-fd {res['n_fd']}"
        f"{f' --n-ldm {n_ldm}' if n_ldm != res['n_fd'] else ''}` "
        f"(seed {res['seed']}, {res['seconds'] / 60:.1f} min on the CPU).",
        "",
        "| measure | this generator | renders (the real thing) |",
        "|---|---|---|",
        f"| (a) share of {js['n']} images whose best one-object caption has judge p >= 0.5 (psi = 1) | "
        f"{100 * js['pass']:.1f} % | {100 * jr['pass']:.1f} % |",
        f"| mean p of the best caption | {js['mean_best_p']:.3f} | {jr['mean_best_p']:.3f} |",
        f"| every shape among the argmax captions | {'yes' if js['every_shape'] else 'no'} | "
        f"{'yes' if jr['every_shape'] else 'no'} |",
        f"| every colour among the argmax captions | {'yes' if js['every_colour'] else 'no'} | "
        f"{'yes' if jr['every_colour'] else 'no'} |",
        f"| the world guide's best caption is the judge's | {100 * res['guide_agrees_samples']:.1f} % | "
        f"{100 * res['guide_agrees_renders']:.1f} % |",
        f"| ... among those with p >= 0.5 (shapes / colours) | "
        f"{'yes' if js['every_shape_confident'] else 'no'} / {'yes' if js['every_colour_confident'] else 'no'} | "
        f"{'yes' if jr['every_shape_confident'] else 'no'} / {'yes' if jr['every_colour_confident'] else 'no'} |",
        "",
        f"Argmax shapes of the samples: {_fmt_counts(js['shapes'])}.  ",
        f"Argmax colours of the samples: {_fmt_counts(js['colours'])}.",
        "",
        f"(b) Fréchet distance on the world judge's unit image embeddings (128-d), against {res['n_fd']} renders of "
        "the training distribution (lower is better):",
        "",
        "| set | n | FD |",
        "|---|---|---|",
        f"| a second set of renders (the floor at this n) | {res['n_fd']} | {res['fd_renders_floor']:.4f} |",
        f"| world-stylegan2, psi = 1 | {res['n_fd']} | {res['fd_stylegan']:.4f} |",
    ]
    if "fd_ldm" in res:
        lines += [
            f"| world-ldm, unguided (guidance 0, cfg 0), 50 DDIM steps | {res['n_ldm']} | {res['fd_ldm']:.4f} |",
            f"| world-ldm against renders of its own training data (1-2 objects, 32 px shown at 64) | "
            f"{res['n_ldm']} | {res['fd_ldm_vs_its_data']:.4f} |",
        ]
    if res.get("inversion"):
        inv = res["inversion"]
        lines += [
            "",
            f"(d) Inversion (`--n-invert {inv[0]['n']}`): one-object renders inverted into W+ by the `invert` method "
            f"({inv[0]['steps']} steps), each alone:",
            "",
            "| renders | n | PSNR mean / median / min (dB) | PSNR >= 24 dB | judge: same shape and colour as the "
            "original | original read truly | inverted read truly | s / image |",
            "|---|---|---|---|---|---|---|---|",
        ]
        names = {"train": "unseen draws of the training distribution", "heldout": "held-out (shape, colour) pairs"}
        lines += [f"| {names[r['split']]} | {r['n']} | {r['psnr_mean']:.1f} / {r['psnr_median']:.1f} / "
                  f"{r['psnr_min']:.1f} | {100 * r['share_psnr_24']:.0f} % | {100 * r['judge_agrees']:.0f} % | "
                  f"{100 * r['judge_original_true']:.0f} % | {100 * r['judge_inverted_true']:.0f} % | "
                  f"{r['seconds_per_image']} |" for r in inv]
        if res.get("inversion_grid"):
            lines += ["", f"![originals and their inversions, in pairs]({Path(res['inversion_grid']).name})"]
    return "\n".join(lines)


def _segments(run_dir: Path | None) -> list[dict]:
    if run_dir is None or not (run_dir / "segments.jsonl").exists():
        return []
    return [json.loads(line) for line in (run_dir / "segments.jsonl").read_text().splitlines() if line.strip()]


def card_text(res: dict, run_dir: Path | None, notes: str = "") -> str:
    """The model card: what it is, its config and data, how it was trained (the run's segments), the measures."""
    from clipkit.methods.stylegan.checkpoints import read_safetensors_metadata

    model = Path(res["model"])
    meta = read_safetensors_metadata(model)
    config = json.loads(meta.get("config", "{}"))
    training = json.loads(meta.get("training", "{}"))
    from safetensors import safe_open

    with safe_open(str(model), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k != "latent_avg")
    segments = _segments(run_dir)
    rows = "\n".join(
        f"| `{s['command']}`{' (' + s['note'] + ')' if s.get('note') else ''} | {s['steps']} | {s['kimg']} | "
        f"{s['segment_minutes']} | {s.get('s_per_step_this_segment')} | {s.get('processes', 1)} |" for s in segments
    )
    total_min = segments[-1]["total_minutes"] if segments else None
    cpu_min = segments[-1]["cpu_minutes"] if segments else None
    grid = Path(res["grid"]).name if res.get("grid") else None
    text = f"""# {MODEL_NAME}

A small StyleGAN2 generator (Karras et al., CVPR 2020) trained here, from scratch, on one-object scenes of the
procedural world (`clipkit/world/scene.py`), 64 x 64 px. It is the StyleGAN family's world model: the generator
StyleCLIP / StyleMC / StyleGAN-NADA-style methods edit in the offline test bed. It knows nothing outside that world.

## Use

```python
import torch
from clipkit.methods.stylegan.checkpoints import load_stylegan
G = load_stylegan("clipkit/world/models/{model.name}")   # Generator, eval, latent_avg set
img = G(torch.randn(4, G.style_dim), truncation=1.0)     # [4, 3, 64, 64], about [-1, 1]
```

File: `{model.name}`, {model.stat().st_size / 1e6:.1f} MB, fp16 safetensors in the project's StyleGAN format
(`save_generator`'s keys and config metadata; rosinality port names), `latent_avg` = the mean of 8,192 mapped z.
{params:,} values (parameters and buffers).

## Architecture

Config: `{json.dumps(config)}`

- mapping: {config.get('n_mlp')} layers (StyleGAN3's small configs use 2), style_dim {config.get('style_dim')},
  lr_mlp {config.get('lr_mlp')}
- synthesis: StyleGAN2 config E/F (modulated convs with demodulation, noise inputs, skip ToRGBs), channels
  {config.get('channels')}
- discriminator (training only; `clipkit/methods/stylegan/discriminator.py`): residual, minibatch stddev, the same
  channels

## Data

One-object world scenes rendered on the fly (`sample_scene(split="train", n_objects=1)`): 6 shapes, 11 colours, 2
sizes, 5 positions, 5 background patterns in a muted colour, 3 lightings, small jitter of angle, scale and place;
the train split of the world CLIPs and the world LDM (the 12 held-out (shape, colour) pairs are never drawn); the
palette colours without shades or pixel noise; [-1, 1].

## Training

`clipkit/world/train_stylegan.py`: the non-saturating logistic loss, lazy R1 (gamma {training.get('r1_gamma')},
every {training.get('r1_every')} steps), no path-length regulariser, style mixing {training.get('mixing')}, EMA
of G (half-life batch x 10 / 32 kimg, ramp-up 0.05), Adam (0, 0.99), lr {training.get('lr')}, batch
{training.get('batch')}, DiffAugment: {training.get('augment') or 'none (the data are unlimited)'}; seed
{training.get('seed')}. Every draw of step i is seeded by (seed, i), so `--resume` continues exactly.

| segment (in order; each next one adds `--resume`) | steps reached | kimg | wall min | s / step | processes |
|---|---|---|---|---|---|
{rows}

Total: {meta.get('steps')} steps, {meta.get('kimg')} kimg, {total_min} wall minutes, {cpu_min} CPU minutes
(every process).

## Measured

{results_block(res)}

{f"![64 samples at psi = 1]({grid})" if grid else ""}

{notes}
"""
    return text.rstrip() + "\n"


# ==================================================================================================== CLI
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_OUT)
    p.add_argument("--n-judge", type=int, default=1000, help="samples (and renders) the judge scores")
    p.add_argument("--n-fd", type=int, default=5000, help="images per set of the Fréchet distances")
    p.add_argument("--n-ldm", type=int, default=None, help="world-ldm samples (default --n-fd)")
    p.add_argument("--no-ldm", action="store_true", help="skip the world-ldm comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=Path, default=GRID, help="PNG of 64 samples")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--write-card", action="store_true", help=f"write the card ({CARD.name} beside the model)")
    p.add_argument("--card", type=Path, default=CARD)
    p.add_argument("--run-dir", type=Path, default=None, help="the training run (segments.jsonl) for the card")
    p.add_argument("--notes", type=Path, default=None, help="markdown appended to the card")
    p.add_argument("--n-invert", type=int, default=0, help="renders inverted per split (the issue's 50; 0 = none)")
    p.add_argument("--invert-steps", type=int, default=None, help="inversion steps (default: the method's)")
    p.add_argument("--inversion-grid", type=Path, default=INVERSION_GRID, help="PNG of originals and inversions")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if min(a.n_judge, a.n_fd) < 2:
        p.error("--n-judge and --n-fd must be at least 2")
    if a.threads:
        torch.set_num_threads(a.threads)
    res = evaluate(a.model, a.n_judge, a.n_fd, a.n_ldm, a.seed, a.grid, not a.no_ldm, a.n_invert, a.invert_steps,
                   a.inversion_grid)
    print(results_block(res))
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=1))
    if a.write_card:
        notes = a.notes.read_text() if a.notes is not None else ""
        a.card.write_text(card_text(res, a.run_dir, notes))
        print(f"wrote {a.card}")
    return res


if __name__ == "__main__":
    main()
