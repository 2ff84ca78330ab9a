"""Live sliders: how long a strength change takes to redraw, against pressing Run again, in one run.

    .venv/bin/python bench/stylegan_live.py [--threads 1] [--repeats 10] [--counts 1,4]

For StyleCLIP global directions, StyleMC and the StyleCLIP mapper on the world StyleGAN2 (64 px), the app's
live path (``clipkit.ui.live.LiveRenderer.render``, what a slider's release event runs, without the browser
round trip) is timed at changing strengths, after one full Run whose artifacts it reuses. The baseline is that
full Run (global directions: with its channel statistics already cached; StyleMC: its direction search; the
mapper: its training, at a short ``--mapper-steps``). Prints medians in ms, the target (100 ms) and the ratio
Run / live.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipkit import api
from clipkit.api import get_method
from clipkit.ui.live import LiveRenderer

TARGET_MS = 100.0


def timed(fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--counts", default="1,4", help="images per edit")
    p.add_argument("--mapper-steps", type=int, default=100)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    live = LiveRenderer()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in [int(c) for c in a.counts.split(",")]:
            mapper_file = Path(tmp) / f"mapper-{count}.png"
            trained, t_train = timed(lambda: api.run("styleclip_mapper_train", steps=a.mapper_steps))
            trained.save(mapper_file)
            cases = [
                ("global_directions", "alpha", [2.0, 3.0, 4.0, 5.0, 6.0], {}, "Run with statistics cached"),
                ("stylemc", "change_power", [20.0, 30.0, 40.0, 50.0, 60.0], {}, "Run (direction search)"),
                ("styleclip_mapper", "alpha", [0.05, 0.08, 0.1, 0.12, 0.15],
                 {"mapper": str(mapper_file.with_name(f"{mapper_file.stem}.mapper.safetensors"))},
                 f"Run of the trainer ({a.mapper_steps} steps)"),
            ]
            for name, knob, values, inputs, what in cases:
                m = get_method(name)
                settings = api.build_settings(name, count=count)[1]
                result, t_run = timed(lambda: api.run(name, settings, **inputs))  # noqa: B023 (called at once)
                if name == "styleclip_mapper":
                    t_run = t_train
                last = Path(tmp) / f"{name}-{count}.png"
                result.save(last)
                live.before(m, settings, inputs, last)  # the before picture, drawn once per start
                times = []
                for i in range(a.repeats):
                    s = dataclasses.replace(settings, **{knob: values[i % len(values)]})
                    _, t = timed(lambda: (live.render(m, s, inputs, last), live.before(m, s, inputs, last)))  # noqa: B023
                    times.append(t)
                ms = statistics.median(times) * 1000
                rows.append((name, count, ms, t_run * 1000, what))
    print(f"torch threads {torch.get_num_threads()}, {a.repeats} slider moves each, 64 px world StyleGAN2")
    print(f"{'method':20s} {'images':>6s} {'live ms':>8s} {'<=100?':>6s} {'Run ms':>9s} {'Run/live':>9s}  baseline")
    for name, count, ms, run_ms, what in rows:
        print(f"{name:20s} {count:6d} {ms:8.1f} {'yes' if ms <= TARGET_MS else 'no':>6s} {run_ms:9.0f} "
              f"{run_ms / ms:9.1f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
