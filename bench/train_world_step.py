"""Speed of the world trainer's step: channels_last images + fused AdamW against the plain layout + loop AdamW.

Both variants start from the same weights and train on the same rendered batches, interleaved in this run;
prints the median seconds per step of each, their ratio, and how far the two losses drift apart (the same
maths in another order, so they should agree to float rounding).

    .venv/bin/python bench/train_world_step.py [--model world-judge] [--batch 64] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from open_clip.loss import ClipLoss

from clipkit.world.data import HardNegativeBatchSampler, WorldDataset
from clipkit.world.train_clip import create, make_optimizer, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-judge")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, _, tokenizer = create(a.model)
    ds = WorldDataset(tokenizer, seed=0, length=(a.steps * a.repeats + 2) * a.batch)
    batches = []
    for indices in HardNegativeBatchSampler(ds, a.batch):
        items = ds.__getitems__(indices)
        batches.append((torch.stack([i for i, _ in items]), torch.stack([t for _, t in items])))
    variants = {"plain + loop AdamW": (False, False), "channels_last + fused AdamW": (True, True)}
    runs = {}
    for name, (_, fused) in variants.items():
        m = copy.deepcopy(model).train()
        runs[name] = (m, make_optimizer(m, 1e-3, 0.1, fused=fused))
    loss_fn, times, losses = ClipLoss(), {n: [] for n in variants}, {n: [] for n in variants}
    for name, (channels_last, _) in variants.items():  # warm-up step, not timed
        m, opt = runs[name]
        losses[name].append(float(train_step(m, opt, loss_fn, *batches[0], channels_last=channels_last)))
    for r in range(a.repeats):
        chunk = batches[1 + r * a.steps: 1 + (r + 1) * a.steps]
        for name, (channels_last, _) in variants.items():
            m, opt = runs[name]
            t0 = time.perf_counter()
            for images, tokens in chunk:
                losses[name].append(float(train_step(m, opt, loss_fn, images, tokens, channels_last=channels_last)))
            times[name].append((time.perf_counter() - t0) / len(chunk))
    base, new = (statistics.median(times[n]) for n in variants)
    drift = max(abs(x - y) for x, y in zip(*losses.values()))
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, {a.steps} steps x {a.repeats}")
    for name in variants:
        print(f"  {name:28s} {statistics.median(times[name]):.3f} s/step")
    print(f"  speed-up {base / new:.2f}x; largest loss difference over {len(losses[name])} steps {drift:.2e}")


if __name__ == "__main__":
    main()
