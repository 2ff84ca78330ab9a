"""How many torch threads a job gets: the cores this process may use, shared among the jobs that run at once.

torch's default gives every process (and, within a process, every thread that runs an operator) as many intra-op
threads as there are cores. Two jobs side by side then ask for twice the cores there are, and OpenMP threads that
spin-wait for each other on a shared core make each job many times slower than half its speed alone (measured in
issue #28: 57-68 s for what took 5.8 s at one thread). The policy here splits the cores instead:

    threads = max(1, cores available // jobs at once)

unless the user named a number (``--threads``, else ``$OMP_NUM_THREADS``, the variable torch itself reads), which
wins. The cores available are those the process may run on (``os.sched_getaffinity``: a container's or
``taskset``'s limit), else ``os.cpu_count()``. ``torch.set_num_threads`` is process-wide, so a server running N
jobs at once (the app's ``--concurrency N``, jobs in threads of one process) sets cores // N once at start.

Second, OpenMP's idle threads spin-wait by default. When another process (or another job's threads) holds a core,
a parallel region's barrier waits for a descheduled thread while its partners burn their time slices spinning:
a 2-thread run next to one busy process took 121 s for what took 7.7 s at one thread, and 5.5 s with
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep). Importing this module therefore makes PASSIVE the default for
the process (``os.environ.setdefault``: a value the user set stays). OpenMP reads it once, when torch is first
imported, so it counts only where this module is imported before torch: the command line (``clipkit.cli``
imports it first, and a test checks that) and every command it starts.

``bench/threads.py`` measures both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

THREADS_ENV = "OMP_NUM_THREADS"  # torch's own; a value set here counts as the user's explicit choice
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"

os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")  # see above: before torch is imported, or it has no effect


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform has one, else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    text = os.environ.get(THREADS_ENV, "").strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def threads_for(jobs: int = 1, threads: int | None = None, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` jobs running at once: ``threads`` when given (> 0), else
    ``$OMP_NUM_THREADS`` when set, else ``max(1, cores // jobs)``; never less than 1. ``cores`` defaults to
    ``available_cores()``."""
    if threads is not None and threads > 0:
        return int(threads)
    env = _env_threads()
    if env is not None:
        return env
    cores = available_cores() if cores is None else cores
    return max(1, int(cores) // max(1, int(jobs)))


def set_threads(jobs: int = 1, threads: int | None = None) -> int:
    """Set torch's intra-op threads for this process by the policy (``threads_for``); returns the number set.

    Inter-op threads are left as torch sets them: eager CPU work does not use that pool (and torch allows setting
    it only once, before any parallel work)."""
    import torch

    n = threads_for(jobs, threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def job_threads(jobs: int = 1, threads: int | None = None) -> Iterator[int]:
    """``set_threads`` for the body, then the number before it back (a command called in-process, e.g. by a test,
    leaves the process as it found it)."""
    import torch

    before = torch.get_num_threads()
    n = set_threads(jobs, threads)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
