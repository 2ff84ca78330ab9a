"""A CLIP-guided step against the bare CLIP forward+backward on the same images, for the diffusion method and for
pixel generate on the world models; before/after in one run.

    python bench/guided_step.py [--before DIR] [--threads 1] [--rounds 3] [--steps 8] [--judge 16]

For each source tree (this one, and ``--before DIR``, e.g. ``git worktree add /tmp/before COMMIT``), a child
process times, interleaved and as medians:

- **diffusion**: one guided pass of ``clip_guided_diffusion`` on world-ldm with the world guide, batch 8, its
  default views (16 whole-image cutouts, noise 0.5), one pass a step: the median time between the run's step
  callbacks (steps with a preview left out);
- **generate**: one step of pixel ``generate`` (batch 1, 32 views), timed the same way;
- **bare**: the world guide's forward+backward alone on a batch of the very views that step encodes (128 for
  diffusion, 32 for generate): open_clip's ``encode_image`` on the normalised views, cosine to the prompt,
  gradient to the views. ``bare`` is that as plain fp32 code does it (what issue #28 measured against);
  ``bare*`` is the CLIP at its fastest here (channels-last input, the loss scaled out of subnormal floats), so
  ``step / bare*`` is what the step costs beyond the CLIP itself.

Each child's ratios are measured in one process (absolute times on a shared machine are noisy). A judged check
follows in the first round: the diffusion method's samples for "a red circle" from each tree (``--judge``
samples: seeds 0, 1, ... of batch 8; ``--judge-steps`` DDIM steps, the defaults otherwise), the count the world
judge ranks "a red circle" first among the one-object captions, and how far the trees' images differ (same
seeds: guided sampling amplifies float rounding, so they are not bit-equal; ``bench/default_run.py`` judges 32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle"


def step_times(run) -> float:
    """Median seconds between a run's step callbacks, leaving out steps that made a preview."""
    marks: list[tuple[float, bool]] = []
    run(callback=lambda info: marks.append((time.perf_counter(), info.preview is not None)))
    gaps = [b[0] - a[0] for a, b in zip(marks, marks[1:]) if not b[1]]
    return statistics.median(gaps)


def child(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    from clipkit.guidance.augment import Cutouts
    from clipkit.guidance.clip import load_clip
    from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion
    from clipkit.methods.diffusion.latent_model import load_latent_model
    from clipkit.methods.image.generate import generate

    clip = load_clip("world-guide", device="cpu")
    ldm = load_latent_model("world-ldm", device="cpu")
    gen = torch.Generator().manual_seed(0)
    text = clip.encode_text([PROMPT])
    with torch.no_grad():
        decoded = ldm.decode(torch.randn(8, *ldm.latent_shape, generator=gen), size=clip.image_size)
    views = {"diffusion": Cutouts(16, min_frac=1.0, noise=0.5)(decoded, clip.image_size, gen),
             "generate": Cutouts(32, min_frac=1.0, noise=0.5)(decoded[:1], clip.image_size, gen)}

    def bare(v: torch.Tensor, best: bool) -> None:
        x = v.detach().contiguous().requires_grad_(True)  # plain NCHW, whatever layout the views came in
        y = x.contiguous(memory_format=torch.channels_last) if best else x
        emb = F.normalize(clip.model.encode_image((y - clip.mean) / clip.std).float(), dim=-1)
        torch.autograd.grad((1 - emb @ text.T).sum() * (2.0**40 if best else 1.0), x)

    def diffusion() -> float:
        return step_times(lambda callback: clip_guided_diffusion(
            clip=clip, latent_model=ldm, prompt=PROMPT, steps=args.steps, recurrence=1, batch=8, seed=0,
            callback=callback, progress=False))

    def pixels() -> float:
        return step_times(lambda callback: generate(clip=clip, prompt=PROMPT, steps=args.steps, seed=0,
                                                    callback=callback, progress=False))

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    jobs = {
        "diffusion": diffusion, "generate": pixels,
        "bare diffusion": lambda: timed(lambda: bare(views["diffusion"], False)),
        "bare* diffusion": lambda: timed(lambda: bare(views["diffusion"], True)),
        "bare generate": lambda: timed(lambda: bare(views["generate"], False)),
        "bare* generate": lambda: timed(lambda: bare(views["generate"], True)),
    }
    for fn in jobs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for k, fn in jobs.items():
            times[k].append(fn())
    out = {k: statistics.median(v) for k, v in times.items()}
    if args.judge:
        judge = load_clip("world-judge", device="cpu")
        from clipkit.world.scene import ONE_OBJECT_CAPTIONS

        captions = list(ONE_OBJECT_CAPTIONS)
        images = torch.cat([clip_guided_diffusion(clip=clip, latent_model=ldm, prompt=PROMPT, batch=8, seed=seed,
                                                  steps=args.judge_steps, progress=False).images
                            for seed in range(max(1, args.judge // 8))])
        first = judge.caption_probabilities(images, captions).argmax(1) == captions.index(PROMPT)
        out["judged first"] = int(first.sum())
        out["judged of"] = int(first.numel())
        torch.save(images, args.images)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(source: Path, args, images: Path, judge: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads),
           "--steps", str(args.steps), "--repeats", str(repeats), "--judge", str(judge),
           "--judge-steps", str(args.judge_steps), "--images", str(images)]
    p = subprocess.run(cmd, env=env, cwd=source, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"child for {source} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, help="another source tree to measure in turn (the baseline)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="child processes per tree, in turn")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats inside each child")
    p.add_argument("--steps", type=int, default=8, help="steps of each timed run")
    p.add_argument("--judge", type=int, default=16, help="judged samples per tree (0: none)")
    p.add_argument("--judge-steps", type=int, default=20, help="DDIM steps of the judged samples (3 passes each)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    trees = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    tmp = Path(tempfile.mkdtemp(prefix="guided-step-"))
    results: dict[str, list[dict]] = {k: [] for k in trees}
    judged: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, source in (trees.items() if r % 2 == 0 else reversed(trees.items())):
            judge = args.judge if r == 0 else 0
            res = run_child(source, args, tmp / f"{name}.pt", judge, args.repeats)
            results[name].append(res)
            if judge:
                judged[name] = res
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)

    print(f"\nworld guide, world-ldm; {args.threads} thread(s); medians of {args.rounds} processes x "
          f"{args.repeats} repeats; seconds")
    print("| tree | step | seconds | bare | bare* | step / bare | step / bare* |")
    print("|---|---|---|---|---|---|---|")
    for name in trees:
        for kind in ("diffusion", "generate"):
            med = {k: statistics.median(r[k] for r in results[name])
                   for k in (kind, f"bare {kind}", f"bare* {kind}")}
            ratio = statistics.median(r[kind] / r[f"bare {kind}"] for r in results[name])
            best = statistics.median(r[kind] / r[f"bare* {kind}"] for r in results[name])
            print(f"| {name} | {kind} | {med[kind]:.3f} | {med[f'bare {kind}']:.3f} | {med[f'bare* {kind}']:.3f} "
                  f"| {ratio:.2f}x | {best:.2f}x |")
    if len(trees) == 2:
        for kind in ("diffusion", "generate"):
            speed = statistics.median(b[kind] / a[kind] for a, b in zip(results["after"], results["before"]))
            print(f"{kind}: a step of 'after' is {speed:.2f}x faster than 'before' (same round, median)")
    if judged:
        import torch

        for name, res in judged.items():
            print(f"judge: '{PROMPT}' ranked first for {res['judged first']} of {res['judged of']} ({name})")
        if len(judged) == 2:
            a, b = torch.load(tmp / "after.pt"), torch.load(tmp / "before.pt")
            print(f"largest pixel difference after vs before, same seeds: {float((a - b).abs().max()):.4f} "
                  f"(mean {float((a - b).abs().mean()):.5f})")


if __name__ == "__main__":
    main()
