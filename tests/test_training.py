"""The one training loop: checkpoints at its cadence and at a stop, exact resume, cancel, a time budget."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from clipkit.guidance.runs import CancelToken, save_safetensors
from clipkit.guidance.training import fit


class Toy:
    """A linear fit whose data come from its own generator, saved with that generator's state (exact resume)."""

    def __init__(self, folder: Path | None = None, cancel_at: int | None = None, cancel: CancelToken | None = None):
        self.net = torch.nn.Linear(3, 1)
        with torch.no_grad():
            self.net.weight.zero_()
            self.net.bias.zero_()
        self.gen = torch.Generator().manual_seed(0)
        self.step, self.saves, self.cancel_at, self.cancel = 0, [], cancel_at, cancel
        if folder is not None and (folder / "toy.safetensors").is_file():
            t = load_file(str(folder / "toy.safetensors"))
            self.net.load_state_dict({"weight": t["weight"], "bias": t["bias"]})
            self.gen.set_state(t["rng"])
            self.step = int(t["step"])

    def train_step(self) -> dict[str, float]:
        x = torch.randn(8, 3, generator=self.gen)
        loss = (self.net(x).squeeze(1) - x @ torch.tensor([1.0, -2.0, 0.5])).pow(2).mean()
        self.net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in self.net.parameters():
                p -= 0.1 * p.grad
        self.step += 1
        if self.cancel is not None and self.step == self.cancel_at:
            self.cancel.cancel()
        return {"loss": float(loss.detach())}

    def save(self, folder: Path) -> Path:
        self.saves.append(self.step)
        return save_safetensors({**{k: v.detach().clone() for k, v in self.net.state_dict().items()},
                                 "rng": self.gen.get_state(), "step": torch.tensor(self.step)},
                                folder / "toy.safetensors")


def test_a_cancelled_run_saves_and_resumes_to_the_same_end(tmp_path):
    straight = Toy()
    done = fit(straight, 10, tmp_path / "a", every=4, progress=False)
    assert straight.saves == [4, 8, 10] and done.end_step == 10 and not done.cancelled
    token = CancelToken()
    first = Toy(cancel_at=6, cancel=token)
    part = fit(first, 10, tmp_path / "b", every=4, cancel=token, progress=False)
    assert part.cancelled and part.end_step == 6 and first.saves == [4, 6]  # what it learnt is kept
    second = Toy(tmp_path / "b")
    rest = fit(second, 10, tmp_path / "b", every=4, progress=False)
    assert rest.start_step == 6 and len(rest.history) == 4
    assert [h["loss"] for h in part.history + rest.history] == [h["loss"] for h in done.history]
    assert torch.equal(second.net.weight, straight.net.weight)
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 10


def test_a_time_budget_and_callbacks(tmp_path):
    seen = []
    t = Toy()
    out = fit(t, 1000, tmp_path, every=500, max_seconds=0.0, callback=seen.append, progress=False)
    assert out.out_of_time and out.end_step == 0 and t.saves == [] and seen == []
    out = fit(t, 3, tmp_path, every=500, callback=seen.append, progress=False)
    assert [s.step for s in seen] == [1, 2, 3] and seen[-1].total == 3 and t.saves == [3]
