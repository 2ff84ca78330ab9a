"""Two jobs side by side against one alone: torch's default threads against the thread policy (issue #28).

    python bench/threads.py [--method generate] [--steps 20] [--repeats 1] [--configs default,policy-threads,policy]

The job: one small run through ``clipkit.api`` with the shipped world models (pixel ``generate`` with the world
guide by default, or ``diffusion``), about 5 s at one thread on the 2-core development machine. Two jobs run side
by side as two threads of one process, as the app runs concurrent jobs. Each configuration runs in its own
process, because OpenMP reads its settings when torch is first imported:

- ``default``: today's behaviour: torch's default intra-op threads (every core) for every job, OpenMP's default
  (spinning) wait policy.
- ``policy-threads``: ``guidance.threads.threads_for``: cores // jobs threads (all cores alone, half each for two),
  spinning waits.
- ``policy``: what the command line does: the same threads and ``OMP_WAIT_POLICY=PASSIVE``.

For each it prints the job's time alone, each job's time in the pair, and each job's speed relative to alone
(``alone / in pair``; the target is >= 0.5 under the policy), the same job alone at one thread (a reference free of
thread effects), and the pair's and the lone job's speed against the default configuration's lone job.
``OMP_NUM_THREADS`` is removed from the workers' environment so torch's default is the machine's. Absolute
seconds on a shared machine are noisy; the ratios, measured in one run, are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("default", "policy-threads", "policy")


def worker(config: str, method: str, steps: int, repeats: int) -> dict:
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)")  # as torch reads it on import, next
    import torch

    from clipkit import api
    from clipkit.guidance.threads import available_cores, threads_for

    default = torch.get_num_threads()
    threads = {1: default, 2: default} if config == "default" else {1: threads_for(1), 2: threads_for(2)}

    def job(seed: int, out: list[float], i: int) -> None:
        t0 = time.perf_counter()
        api.run(method, steps=steps, seed=seed)
        out[i] = time.perf_counter() - t0

    torch.set_num_threads(1)
    api.run(method, steps=2, seed=0)  # loads and caches the models, so no timed run pays for that
    alone: list[float] = []
    single: list[float] = []
    pairs: list[list[float]] = []
    for r in range(repeats):
        torch.set_num_threads(1)
        times = [0.0]
        job(100 + r, times, 0)
        single.append(times[0])
        torch.set_num_threads(threads[1])
        times = [0.0]
        job(100 + r, times, 0)
        alone.append(times[0])
        torch.set_num_threads(threads[2])  # process-wide, as the app sets it once for its --concurrency
        times = [0.0, 0.0]
        workers = [threading.Thread(target=job, args=(200 + 2 * r + i, times, i)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        pairs.append(times)
    return {"config": config, "cores": available_cores(), "threads_alone": threads[1], "threads_pair": threads[2],
            "wait_policy": wait_policy, "alone": alone, "one_thread": single, "pairs": pairs}


def run_config(config: str, a: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT)
    if config == "policy":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--worker", config, "--method", a.method, "--steps", str(a.steps),
           "--repeats", str(a.repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="generate", choices=["generate", "diffusion"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="alone + pair rounds per configuration (medians)")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.method, a.steps, a.repeats)))
        return 0
    results = {c: run_config(c, a) for c in a.configs.split(",")}
    base = statistics.median(results["default"]["alone"]) if "default" in results else None
    print(f"{a.method}, {a.steps} steps, world models; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {a.repeats} round(s) per configuration; speed = alone time / time")
    ok = True
    for c, r in results.items():
        alone = statistics.median(r["alone"])
        each = [statistics.median(t[i] for t in r["pairs"]) for i in range(2)]
        ratios = [alone / t for t in each]
        print(f"  {c:15s} threads {r['threads_alone']} alone / {r['threads_pair']} each of two, wait policy "
              f"{r['wait_policy']}")
        single = statistics.median(r["one_thread"])
        print(f"    alone {alone:7.2f} s   in the pair {each[0]:7.2f} s, {each[1]:7.2f} s   "
              f"speed in the pair vs alone: {ratios[0]:.2f}x, {ratios[1]:.2f}x")
        print(f"    (the same job alone at one thread: {single:.2f} s; alone at {r['threads_alone']} thread(s) is "
              f"{single / alone:.2f}x its speed)")
        if base is not None and c != "default":
            print(f"    vs default's lone job ({base:.2f} s): alone {base / alone:.2f}x, in the pair "
                  f"{base / each[0]:.2f}x, {base / each[1]:.2f}x")
        if c == "policy":
            ok = min(ratios) >= 0.5
            print(f"    target (each job >= 0.5x its speed alone): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
