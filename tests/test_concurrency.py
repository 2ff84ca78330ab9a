"""Runs in parallel threads draw only from their own generators: each equals the same run alone, bit for bit."""

from __future__ import annotations

import threading

import torch

from clipkit import api


def _jobs():
    g = torch.Generator().manual_seed(3)
    photo = torch.rand(1, 3, 48, 48, generator=g)
    return [
        lambda: api.run("generate", clip="tiny", prompt="a red circle", steps=4, size=32, cutouts=4, seed=1),
        lambda: api.run("edit", clip="tiny", image=photo, prompt="a blue square", steps=4, cutouts=4, seed=2),
        lambda: api.run("clipstyler", clip="tiny", image=photo, prompt="fire", steps=3, size=48, crop_size=16,
                        num_crops=4, seed=5),
    ]


def test_concurrent_runs_equal_the_same_runs_alone():
    alone = [job().tensors for job in _jobs()]
    together: list = [None] * len(alone)
    start = threading.Barrier(len(alone))

    def work(i, job):
        start.wait()  # all begin at once, so their steps interleave
        together[i] = job().tensors

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(_jobs())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert b is not None and torch.equal(a, b)
    assert all(a.std() > 0 for a in alone)  # pictures, not blank frames


def test_runs_leave_torch_s_global_rng_alone():
    """A run that drew from the global RNG would shift a network another thread is building from its seed
    (``seeded_init``): the draw itself may even be multiplied by 0, as an edit's pyramid start once was."""
    jobs = [*_jobs(), lambda: api.run("stylegan", count=2, seed=4),
            lambda: api.run("stylemc", clip="tiny", count=1, find_seeds=2, batch=2)]
    for i, job in enumerate(jobs):
        job()  # models load on the first call (under the loading lock, which restores the state anyway)
        torch.manual_seed(123)
        before = torch.get_rng_state().clone()
        job()
        assert torch.equal(before, torch.get_rng_state()), f"job {i} drew from torch's global RNG"
