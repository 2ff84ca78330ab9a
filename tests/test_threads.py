"""The thread policy (clipkit.guidance.threads): cores // jobs, an explicit number wins, never 0; and the command line
makes OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipkit.cli import build_parser
from clipkit.guidance import threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)


@pytest.mark.parametrize(("cores", "jobs", "want"), [
    (2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 1, 16), (16, 2, 8), (16, 3, 5), (16, 4, 4), (16, 32, 1), (1, 1, 1),
])
def test_cores_are_divided_among_the_jobs_at_once(no_env, cores, jobs, want):
    assert threads.threads_for(jobs, cores=cores) == want


def test_never_zero_threads(no_env):
    assert threads.threads_for(0, cores=4) == 4  # no jobs counts as one
    assert threads.threads_for(-3, cores=4) == 4
    assert threads.threads_for(5, cores=0) == 1
    assert threads.threads_for(2, threads=0, cores=1) == 1  # 0 is "not given", not zero threads


def test_an_explicit_number_wins(no_env, monkeypatch):
    assert threads.threads_for(4, threads=3, cores=2) == 3
    monkeypatch.setenv(threads.THREADS_ENV, "5")
    assert threads.threads_for(2, cores=16) == 5  # the environment is the user's choice too
    assert threads.threads_for(2, threads=2, cores=16) == 2  # and --threads beats it
    monkeypatch.setenv(threads.THREADS_ENV, "zero")
    assert threads.threads_for(2, cores=16) == 8  # a value torch could not use either is ignored


def test_cores_come_from_the_affinity_where_there_is_one(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.available_cores() == 3
    monkeypatch.delattr(threads.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 12)
    assert threads.available_cores() == 12
    monkeypatch.setattr(threads.os, "cpu_count", lambda: None)
    assert threads.available_cores() == 1


def test_job_threads_sets_then_restores(no_env):
    before = torch.get_num_threads()
    with threads.job_threads(1, threads=before + 1) as n:
        assert n == before + 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_commands_take_threads():
    parser = build_parser()
    assert parser.parse_args(["serve", "--concurrency", "2", "--threads", "3"]).threads == 3
    assert parser.parse_args(["run", "generate", "--threads", "1"]).threads == 1
    assert parser.parse_args(["batch", "--preset", "p", "--input", "i", "--output", "o", "--threads", "2"]).threads == 2


def test_the_app_sets_cores_over_concurrency_once(no_env, monkeypatch, tmp_path):
    from clipkit.ui import app

    seen = {}
    monkeypatch.setattr(app, "set_threads", lambda jobs, threads: seen.update(jobs=jobs, threads=threads))
    monkeypatch.setattr(app, "build_app", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))  # stop there
    with pytest.raises(SystemExit):
        app.serve(concurrency=3, output_dir=tmp_path / "outputs")
    assert seen == {"jobs": 3, "threads": None}


def test_the_command_line_sets_the_passive_wait_policy_before_torch_loads():
    code = ("import os, sys\n"
            "class Watch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            print('policy at torch import:', os.environ.get('OMP_WAIT_POLICY'))\n"
            "sys.meta_path.insert(0, Watch())\n"
            "import clipkit.cli\n"
            "import torch\n")  # the command line itself imports torch later, once it knows the command
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "policy at torch import: PASSIVE" in out.stdout
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own choice stays
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "policy at torch import: ACTIVE" in out.stdout
