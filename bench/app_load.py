"""A bounded load test of the web app on 127.0.0.1: several clients at once, mixed small jobs, every result checked.

    python bench/app_load.py [--clients 5] [--jobs 20] [--concurrency 2] [--max-rss-gb 6]

Starts ``clipkit serve --tiny --concurrency N`` on a free local port (its own output and preset folders), then
``--clients`` threads, each its own gradio_client session, send ``--jobs`` small jobs in all (generate, edit,
diffusion, feed-forward style, backlit enhancement; each with its own seed or picture) through the app's run
endpoints. The server's resident memory (RSS, with any children) is sampled throughout. Afterwards every job runs
again alone through the Python API and its output must equal the app's pixel for pixel: a result that went to the
wrong client, or a run disturbed by another, shows as a mismatch (the server and the reference runs use the same
number of torch threads, ``--threads``: a convolution's sums are split by thread, and one pixel on a rounding edge
can differ by one level between thread counts). Prints jobs per minute, max RSS and errors, and exits 1 when a job
failed, a result differed or RSS went over ``--max-rss-gb``.

No traffic leaves the machine: the server listens on 127.0.0.1 only and the clients talk to it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipkit.ui.starting import wait_for_app

HOST = "127.0.0.1"
# no telemetry from the server, the clients or huggingface_hub: nothing but 127.0.0.1 is ever contacted
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "GRADIO_SERVER_NAME": HOST}


@dataclass
class Job:
    """One request: a method, its settings (by field name) and its picture, if it takes one."""

    index: int
    method: str
    settings: dict[str, Any]
    image: Path | None = None
    seconds: float = 0.0
    client: int = -1
    output: str | None = None
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_jobs(count: int, folder: Path) -> list[Job]:
    """``count`` small jobs cycling over six methods; seeds, prompts and pictures differ from job to job."""
    from PIL import Image

    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a purple cross"]
    jobs = []
    for i in range(count):
        kind = ("generate", "edit", "diffusion", "img2img", "stylize", "enhance")[i % 6]
        prompt = prompts[i % len(prompts)]
        image = None
        if kind in ("edit", "img2img", "stylize", "enhance"):
            image = folder / f"job{i}.png"
            colour = ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 90) % 256)
            pic = Image.new("RGB", (48, 48), colour)
            pic.paste((255 - colour[0], 128, colour[2] // 2), (8 + i % 16, 8, 30 + i % 16, 36))
            pic.save(image)
        settings = {
            "generate": {"prompt": prompt, "steps": 2, "size": 32, "cutouts": 2, "seed": 100 + i},
            "edit": {"prompt": prompt, "steps": 2, "cutouts": 2, "seed": 200 + i},
            "diffusion": {"prompt": prompt, "steps": 2, "recurrence": 1, "batch": 1, "size": 32, "cutouts": 2,
                          "seed": 300 + i},
            "img2img": {"prompt": prompt, "steps": 4, "strength": 0.5, "recurrence": 1, "cutouts": 2, "seed": 500 + i},
            "stylize": {"prompt": "a photo on a striped background", "size": 48, "seed": 400 + i},
            "enhance": {"strength": 0.5 + 0.05 * i},
        }[kind]
        jobs.append(Job(i, kind, settings, image))
    return jobs


def endpoint_args(client: Any, job: Job) -> list[Any]:
    """The job as the positional arguments of the app's ``/run_<method>`` endpoint: each parameter is a control
    (by its label), the picture, or the mask painter (left empty)."""
    from gradio_client import handle_file

    from clipkit.presets import settings_dict
    from clipkit.registry import Control, get_method

    m = get_method(job.method)
    values = {**settings_dict(m.defaults()), **job.settings}
    by_label: dict[str, Any] = {}
    for name, value in values.items():
        ctl = m.controls.get(name, Control())
        by_label[ctl.label or name.replace("_", " ")] = "" if value is None else value
    for inp in m.image_inputs:
        by_label[inp.label] = handle_file(str(job.image))
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"][f"/run_{job.method}"]
    args = []
    for p in info["parameters"]:
        if p["label"] in by_label:
            args.append(by_label[p["label"]])
        elif p["label"].startswith("Region to change"):
            args.append(None)
        else:
            raise KeyError(f"/run_{job.method}: no value for parameter {p['label']!r}")
    return args


def start_server(workdir: Path, concurrency: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **ENV, "CLIPKIT_USER_PRESETS": str(workdir / "presets"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "clipkit", "serve", "--tiny", "--host", HOST, "--port", str(port),
           "--concurrency", str(concurrency), "--output-dir", str(workdir / "app-out")]
    log = open(workdir / "server.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://{HOST}:{port}/"
    try:
        wait_for_app(url, proc)
    except RuntimeError as e:
        proc.kill()
        raise RuntimeError(f"{e}; see {workdir / 'server.log'}") from e
    return proc, url


def rss_of(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
    except psutil.Error:
        return 0


def run_clients(url: str, jobs: list[Job], clients: int, downloads: Path) -> tuple[float, list[str]]:
    """Send every job through ``clients`` sessions at once; returns the wall time and the clients' own errors."""
    from gradio_client import Client

    todo: queue.Queue[Job] = queue.Queue()
    for j in jobs:
        todo.put(j)
    failures: list[str] = []

    def worker(n: int) -> None:
        try:  # a busy server answers slowly: a generous timeout, not httpx's 5 s
            client = Client(url, verbose=False, download_files=str(downloads / f"client-{n}"),
                            httpx_kwargs={"timeout": 300}, analytics_enabled=False)
        except Exception as e:
            failures.append(f"client {n} could not connect: {type(e).__name__}: {e}")
            return
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            job.client = n
            t0 = time.perf_counter()
            try:
                out = client.predict(*endpoint_args(client, job), api_name=f"/run_{job.method}")
                record, download = out[3], out[4]  # preview, status, gallery, record, download, then any extras
                job.output, job.record = download, record or {}
            except Exception as e:  # a failed job is counted and reported, the others go on
                job.error = f"{type(e).__name__}: {e}"
            job.seconds = time.perf_counter() - t0

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, failures


def alone(job: Job) -> Any:
    """The job run by itself through the Python API, as the app runs it (tiny CLIP where a method takes one)."""
    from clipkit import api
    from clipkit.guidance.images import load_image

    m = api.get_method(job.method)
    images = {inp.name: load_image(job.image) for inp in m.image_inputs}
    return api.run(job.method, clip="tiny" if m.uses_clip else None, **images, **job.settings)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--max-rss-gb", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server and of the reference runs")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    a = p.parse_args(argv)
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="clipkit-load-") as tmp:
        workdir = Path(tmp)
        jobs = make_jobs(a.jobs, workdir)
        proc, url = start_server(workdir, a.concurrency, a.threads)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(rss_of(proc.pid))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            idle_rss = rss_of(proc.pid)
            sampler.start()
            wall, client_errors = run_clients(url, jobs, a.clients, workdir / "downloads")
        finally:
            stop.set()
            sampler.join(5)
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        import torch

        mismatched, refs, gots = [], {}, {}
        threads = torch.get_num_threads()
        torch.set_num_threads(a.threads)  # as the server ran (a test session may have set 1)
        try:
            for job in jobs:
                if job.error or not job.output:
                    continue
                refs[job.index] = np.asarray(alone(job).image).astype(np.int16)
                gots[job.index] = np.asarray(Image.open(job.output).convert("RGB")).astype(np.int16)
        finally:
            torch.set_num_threads(threads)
        differences = {}
        for i, got in gots.items():
            ref = refs[i]
            if got.shape != ref.shape or (got != ref).any():
                mismatched.append(i)
                # another job's output here would mean results went to the wrong client
                same_as = [k for k, r in refs.items() if k != i and r.shape == got.shape and (r == got).all()]
                differences[i] = {"method": jobs[i].method, "client": jobs[i].client, "same_as_jobs": same_as,
                                  "max_abs_diff": int(np.abs(got - ref).max()) if got.shape == ref.shape else None,
                                  "pixels_differing": int((got != ref).any(-1).sum()) if got.shape == ref.shape
                                  else None}
        errors = client_errors + [f"job {j.index} ({j.method}, client {j.client}): {j.error}" for j in jobs if j.error]
        done = sum(1 for j in jobs if j.output and not j.error)
        report = {
            "jobs": len(jobs), "completed": done, "clients": a.clients, "concurrency": a.concurrency,
            "threads": a.threads,
            "wall_s": round(wall, 1), "jobs_per_min": round(60 * done / wall, 1) if wall else 0.0,
            "idle_rss_mb": round(idle_rss / 2**20), "max_rss_mb": round(max(samples, default=0) / 2**20),
            "clients_served": len({j.client for j in jobs if j.output}), "errors": errors,
            "mismatched": mismatched, "differences": differences,
            "seconds_per_job": {m: round(float(np.mean([j.seconds for j in jobs if j.method == m])), 2)
                                for m in dict.fromkeys(j.method for j in jobs)},
        }
    print(json.dumps(report, indent=2))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    report["ok"] = (done == len(jobs) and not errors and not mismatched
                    and report["max_rss_mb"] <= a.max_rss_gb * 1024)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
