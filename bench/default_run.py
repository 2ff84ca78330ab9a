"""The diffusion method's default run, old defaults against new, in one run: time, first picture, judged quality.

    python bench/default_run.py [--samples 32] [--threads 1] [--before DIR] [--prompt "a red circle"]

What a user waits for when pressing Run on the app's Generate tab with its defaults: one run of the ``diffusion``
method, eight samples. Each run is a child process that starts as the app's first run does (torch and the
method imported, no model loaded yet) and calls the method: the time to its first preview (``StepInfo.preview``
through the run's callback), to its result, and its samples. Runs go in turn, seed by seed (seeds 0, 8, 16, ...,
batch 8, ``--samples`` in all):

- **old**: the defaults before issue #28 (50 DDIM steps, 3 passes a step, CLIP guidance 0.5, text 3), this tree;
- **new**: this tree's ``DiffusionSettings()``;
- **today** (with ``--before DIR``, a source tree from before, e.g. ``git worktree add /tmp/before COMMIT``): the
  old defaults on the old code, i.e. the run as it was.

Printed: the median seconds of a run and to its first preview, with and without the model loading of a first
run (the app loads the models on its first press), the speed-up of new over old and over today (medians of the
per-seed ratios), and for each the number of samples the world judge (a CLIP that did not guide) ranks the prompt
first among the one-object captions. Absolute seconds on a shared machine are noisy; the ratios are what count.
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
OLD_DEFAULTS = {"steps": 50, "guidance_scale": 0.5, "cfg_scale": 3.0, "recurrence": 3, "cutouts": 16, "noise": 0.5,
                "guidance": "eps", "eta": 0.0, "batch": 8}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion

    settings = json.loads(args.settings)
    marks: list[float] = []
    start = time.perf_counter()
    r = clip_guided_diffusion(prompt=args.prompt, seed=args.seed, progress=False,
                              callback=lambda info: marks.append(time.perf_counter()) if info.preview is not None
                              else None, **settings)
    total = time.perf_counter() - start
    torch.save(r.images, args.images)
    out = {"total": total, "first_preview": marks[0] - start, "load": r.timings["load_s"],
           "steps": len(r.history), "settings": {k: r.settings[k] for k in ("steps", "recurrence", "guidance_scale",
                                                                             "cfg_scale")}}
    print("RESULT " + json.dumps(out), flush=True)


def run_child(source: Path, settings: dict, seed: int, args, images: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads), "--seed",
           str(seed), "--prompt", args.prompt, "--settings", json.dumps(settings), "--images", str(images)]
    p = subprocess.run(cmd, env=env, cwd=source, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"run in {source} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32, help="samples per configuration (runs of 8)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--before", type=Path, help="a source tree from before: its run with the old defaults")
    p.add_argument("--prompt", default="a red circle")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import torch

    from clipkit.guidance.clip import load_clip
    from clipkit.world.scene import ONE_OBJECT_CAPTIONS

    configs = {"old": (ROOT, OLD_DEFAULTS), "new": (ROOT, {})}
    if args.before:
        configs["today"] = (args.before.resolve(), OLD_DEFAULTS)
    tmp = Path(tempfile.mkdtemp(prefix="default-run-"))
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    images: dict[str, list[torch.Tensor]] = {k: [] for k in configs}
    # runs at seeds 0, 8, 16, ...: image i of a run is seed + i (per-image seeds), so runs 8 apart share no image
    seeds = range(0, 8 * max(1, args.samples // 8), 8)
    for seed in seeds:
        order = list(configs.items()) if seed % 16 == 0 else list(reversed(configs.items()))
        for name, (source, settings) in order:
            res = run_child(source, settings, seed, args, tmp / f"{name}-{seed}.pt")
            runs[name].append(res)
            images[name].append(torch.load(tmp / f"{name}-{seed}.pt"))
            print(f"seed {seed} {name}: run {res['total']:.1f} s (load {res['load']:.1f} s), first preview "
                  f"{res['first_preview']:.2f} s; {res['settings']}", flush=True)

    judge = load_clip("world-judge", device="cpu")
    captions = list(ONE_OBJECT_CAPTIONS)
    k = captions.index(args.prompt)
    print(f"\n'{args.prompt}', {len(seeds) * 8} samples (runs at seeds {', '.join(map(str, seeds))}, batch 8), "
          f"{args.threads} thread(s); medians over the runs; seconds")
    print("| defaults | run | run less loading | first preview | first preview less loading | judged first |")
    print("|---|---|---|---|---|---|")
    for name in configs:
        rs = runs[name]
        probs = judge.caption_probabilities(torch.cat(images[name]), captions)
        first = int((probs.argmax(1) == k).sum())

        def med(f) -> float:
            return statistics.median(f(r) for r in rs)  # noqa: B023 (used at once)

        print(f"| {name} | {med(lambda r: r['total']):.1f} | {med(lambda r: r['total'] - r['load']):.1f} | "
              f"{med(lambda r: r['first_preview']):.2f} | {med(lambda r: r['first_preview'] - r['load']):.2f} | "
              f"{first} of {probs.shape[0]} (mean p {float(probs[:, k].mean()):.2f}) |")
    for base in [b for b in ("old", "today") if b in configs]:
        ratio = statistics.median(a["total"] / b["total"] for a, b in zip(runs[base], runs["new"]))
        bare = statistics.median((a["total"] - a["load"]) / (b["total"] - b["load"])
                                 for a, b in zip(runs[base], runs["new"]))
        print(f"new defaults against {base}: {ratio:.2f}x faster a run ({bare:.2f}x less loading)")


if __name__ == "__main__":
    main()
