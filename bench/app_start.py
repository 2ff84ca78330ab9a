"""How long the web app takes to serve: from the command to the first HTTP 200 of its page.

    python bench/app_start.py [--repeats 3] [--tiny] [--timeout 120] [--before DIR] [--source DIR]

Starts the README's command (``.venv/bin/clipkit``, here with ``--port`` a free local port and its own output
folder) as a subprocess, polls ``http://127.0.0.1:PORT/`` until it answers 200, and stops it; the median of
``--repeats`` starts. In the same run it times two baselines the app cannot beat by lazy imports: a bare
``python -c "import gradio"`` (the app must import it to serve) and ``python -c "import torch"``, and prints the
app's start against them as ratios (absolute seconds on a shared machine are noisy; the ratios are what count).
``--before DIR`` also starts the app from another source tree (e.g. ``git worktree add /tmp/old COMMIT``), in
turn with the others, for a before/after in one run.
The target of issue #28 is the app serving within 5 s of the command on the 2-core development machine.

No traffic leaves the machine: the server listens on 127.0.0.1 only, with telemetry off.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clipkit_command() -> list[str]:
    """The README's command: the virtualenv's console script, else the module under this interpreter."""
    script = Path(sys.executable).with_name("clipkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "clipkit"]


def time_command(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def time_app(env: dict[str, str], tiny: bool, timeout: float) -> float:
    """Seconds from starting the app to its page answering HTTP 200."""
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="clipkit-start-"))
    cmd = [*clipkit_command(), "--host", HOST, "--port", str(port), "--output-dir", str(out / "outputs"),
           *(["--tiny"] if tiny else [])]
    url = f"http://{HOST}:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            elapsed = time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited ({proc.returncode}) before serving: "
                                   f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
            if elapsed > timeout:
                raise RuntimeError(f"the app did not answer within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.02)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="start the app in test mode (--tiny)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up on a start after this many seconds")
    p.add_argument("--target", type=float, default=5.0, help="seconds the app should serve within")
    p.add_argument("--before", type=Path, default=None, help="another clipkit source tree to start as well")
    p.add_argument("--source", type=Path, default=ROOT, help="the clipkit source tree to start (default: this one)")
    a = p.parse_args()
    env = {**os.environ, **ENV, "PYTHONPATH": str(a.source.resolve())}
    runs: dict[str, list[float]] = {"app": [], "import gradio": [], "import torch": []}
    if a.before is not None:
        runs["app (before)"] = []
    for _ in range(a.repeats):  # interleaved, so a change in the machine's load touches all alike
        runs["app"].append(time_app(env, a.tiny, a.timeout))
        if a.before is not None:  # its clipkit comes first on the path (the installed one is an editable finder)
            runs["app (before)"].append(time_app({**env, "PYTHONPATH": str(a.before.resolve())}, a.tiny, a.timeout))
        runs["import gradio"].append(time_command([sys.executable, "-c", "import gradio"], env))
        runs["import torch"].append(time_command([sys.executable, "-c", "import torch"], env))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"app start-up, median of {a.repeats} ({os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}):")
    for k, v in runs.items():
        print(f"  {k:15s} {med[k]:6.2f} s   best {min(v):6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"  app / import gradio          = {med['app'] / med['import gradio']:.2f}x")
    print(f"  app / import torch           = {med['app'] / med['import torch']:.2f}x")
    print(f"  app / (gradio + torch)       = {med['app'] / (med['import gradio'] + med['import torch']):.2f}x")
    print(f"  best app / best import gradio = {min(runs['app']) / min(runs['import gradio']):.2f}x (the quietest "
          "moments of a shared machine)")
    if a.before is not None:
        print(f"  before / app                 = {med['app (before)'] / med['app']:.2f}x faster; before / import "
              f"gradio = {med['app (before)'] / med['import gradio']:.2f}x")
    ok = med["app"] <= a.target
    print(f"  target: serving within {a.target:.1f} s: {'met' if ok else 'NOT met'} ({med['app']:.2f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
