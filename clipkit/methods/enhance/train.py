"""Train the illumination network with CLIP-LIT or RAVE guidance from two unpaired folders.

``clipkit train enhance --method rave --backlit DIR --welllit DIR --out runs/rave``
(``--method clip_lit`` for token-space prompt learning, ``clip_lit_latent`` for RAVE's latent-space prompts;
``--synthetic 64`` writes and uses synthetic backlit/well-lit folders instead of ``--backlit/--welllit``).

A run is a fixed schedule of phases (see ``TrainConfig.schedule``), so the phase of any step is known from the
step number and a resumed run continues exactly where it stopped: the checkpoint (safetensors) holds the network,
the prompts or residual vector, both optimizers' state and the random generator's state. ``OUT/enhancement.safetensors``
is the inference-ready network (``clipkit.methods.enhance.api.enhance(img, checkpoint=that_path)``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from torch import Tensor

from clipkit.guidance.clip import ClipModel, get_clip, tiny_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.guide import Guide, PromptPairTerm
from clipkit.guidance.runs import CancelToken, StepCallback, load_optimizer, optimizer_tensors, save_safetensors
from clipkit.guidance.training import fit

from . import checkpoints
from .clip_lit import (
    BacklitProbabilityTerm,
    LatentPromptPair,
    TokenPromptPair,
    margin_ranking_loss,
    prompt_init_loss,
    separation,
)
from .content import ContentTerm
from .data import ImagePool, UnpairedData
from .metrics import luma
from .network import EnhanceNet, apply_illumination
from .rave import ResidualGuidance, image_embeddings

METHODS = ("rave", "clip_lit", "clip_lit_latent")
FORMAT = "clipkit.enhance.train.v1"


@dataclass
class TrainConfig:
    """Every setting of a run (saved in its checkpoints; a resume uses the saved one)."""

    method: str = "rave"
    clip: str = "world-guide"  # guide CLIP: open_clip name; "tiny-clip" = seeded random test model
    clip_weights: str | None = None
    size: int = 64  # training crop side
    batch: int = 4
    steps: int = 300  # enhancement steps, all rounds together
    lr: float = 3e-3
    grad_clip: float = 1.0  # max gradient norm of the network's step (0 = off); keeps early steps from blowing L up
    guide_weight: float = 1.0
    content_weight: float = 1.0
    init: str = "identity"  # identity | random | a published name (e.g. clip-lit-init) | a file
    prompt_lr: float = 5e-3
    prompt_batch: int = 8
    prompt_init_steps: int = 100  # prompt methods: stage 1
    prompt_steps: int = 30  # prompt methods: margin refinement after each enhancement round but the last
    rounds: int = 2
    n_tokens: int = 16
    prompt_loss: str = "probability"  # enhancement loss of prompt methods: the paper's p(backlit) or "cross_entropy"
    seed: int = 0
    save_every: int = 50

    def validate(self) -> TrainConfig:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.prompt_loss not in ("probability", "cross_entropy"):
            raise ParameterError(f"prompt_loss must be 'probability' or 'cross_entropy', got {self.prompt_loss!r}")
        if self.size < 16 or self.batch < 1 or self.steps < 1 or self.rounds < 1:
            raise ParameterError("size >= 16, batch >= 1, steps >= 1 and rounds >= 1 are needed")
        return self

    def schedule(self) -> list[tuple[str, int]]:
        """Phases in order: RAVE only enhances; prompt methods initialise prompts, then alternate."""
        if self.method == "rave":
            return [("enhance", self.steps)]
        per = [self.steps // self.rounds + (r < self.steps % self.rounds) for r in range(self.rounds)]
        phases = [("prompt_init", self.prompt_init_steps)]
        for r, n in enumerate(per):
            phases.append(("enhance", n))
            if r < self.rounds - 1:
                phases.append(("prompt_margin", self.prompt_steps))
        return [p for p in phases if p[1] > 0]

    @property
    def total_steps(self) -> int:
        return sum(n for _, n in self.schedule())

    def phase_at(self, step: int) -> tuple[int, str, int]:
        """(phase index, phase name, step within the phase) of a global step."""
        for i, (name, n) in enumerate(self.schedule()):
            if step < n:
                return i, name, step
            step -= n
        raise IndexError("step beyond the end of the schedule")


def init_network(init: str, generator: torch.Generator) -> EnhanceNet:
    """A trainable network: ``identity`` (the authors' N(0, 0.02) init with output bias 1, so L = 1 and the output
    equals the input before training, which replaces their reconstruction warm-up), ``random`` (their init as is),
    or weights from a published name / file (e.g. ``clip-lit-init``, the authors' identity-trained start)."""
    if init in ("identity", "random"):
        net = EnhanceNet().init_weights(generator)
        with torch.no_grad():
            net.cond_add1.bias.fill_(1.0 if init == "identity" else 0.0)
            for m in (net.cond1, net.condx, net.condy):
                m.bias.zero_()
        return net
    net = checkpoints.load_network(init)
    return net.train().requires_grad_(True)


class Trainer:
    """One CLIP-LIT / RAVE training run: call ``train_step()`` until ``done``; ``save``/``resume`` for checkpoints."""

    def __init__(self, config: TrainConfig, data: UnpairedData, clip: ClipModel | None = None) -> None:
        self.config = c = config.validate()
        self.data = data
        self.clip = clip if clip is not None else load_guide_clip(c.clip, c.clip_weights)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.net = init_network(c.init, self.generator).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        self.prompts: torch.nn.Module | None = None
        self.prompt_opt: torch.optim.Optimizer | None = None
        self.residual: ResidualGuidance | None = None
        self.previous: EnhanceNet | None = None  # the network as it was at the end of the previous round
        if c.method == "rave":
            self.residual = ResidualGuidance.from_images(self.clip, data.backlit.all(), data.welllit.all())
        else:
            if c.method == "clip_lit":
                self.prompts = TokenPromptPair(self.clip, c.n_tokens, self.generator)
            else:
                self.prompts = LatentPromptPair(self.clip.embed_dim, self.generator)
            self.prompt_opt = torch.optim.Adam(self.prompts.parameters(), lr=c.prompt_lr)
        self.content = ContentTerm(weight=c.content_weight)
        self.step = 0
        self._guide: tuple[int, Guide] | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.config.total_steps

    # ----------------------------------------------------------------------------------------------- steps
    def enhance(self, x: Tensor, net: EnhanceNet | None = None) -> Tensor:
        return apply_illumination(x, (net or self.net)(x))

    def guide(self, phase: int) -> Guide:
        """The enhancement-phase guide: RAVE's residual term or the current (frozen) prompt pair, plus content."""
        if self._guide is None or self._guide[0] != phase:
            w = self.config.guide_weight
            if self.residual is not None:
                term = self.residual.term(w)
            else:
                with torch.no_grad():
                    pos, neg = self.prompts.text_features()
                kind = BacklitProbabilityTerm if self.config.prompt_loss == "probability" else PromptPairTerm
                term = kind(weight=w, positive=pos.detach(), negative=neg.detach())
            self._guide = (phase, Guide(self.clip, [term, self.content], generator=self.generator))
        return self._guide[1]

    def train_step(self) -> dict[str, float]:
        """One optimisation step of whatever the schedule says comes next; returns loss values for display."""
        phase, name, k = self.config.phase_at(self.step)
        c, g = self.config, self.generator
        if name == "enhance":
            if k == 0 and any(n == "enhance" for n, _ in c.schedule()[:phase]):
                # a new round: keep the last round's network for the 4-way margin ranking
                self.previous = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.net.train()
            x = self.data.backlit.sample(c.batch, g)
            out = self.enhance(x)
            res = self.guide(phase)(out, content_of=x)
            self.opt.zero_grad(set_to_none=True)
            res.loss.backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), c.grad_clip)
            self.opt.step()
            values = dict(res.values, brightness=float(luma(out.detach()).mean()))
        else:
            b = self.data.backlit.sample(c.prompt_batch, g)
            w = self.data.welllit.sample(c.prompt_batch, g)
            eb, ew = image_embeddings(self.clip, b), image_embeddings(self.clip, w)
            if name == "prompt_init":
                loss = prompt_init_loss(self.prompts, eb, ew)
            else:
                with torch.no_grad():
                    ee = image_embeddings(self.clip, self.enhance(b))
                    ep = None if self.previous is None else image_embeddings(self.clip, self.enhance(b, self.previous))
                loss = margin_ranking_loss(self.prompts, eb, ew, ee, ep)
            self.prompt_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.prompt_opt.step()
            values = {"prompt_loss": loss.item(), "separation": separation(self.prompts, eb, ew)}
        self.step += 1
        values["phase"] = name  # type: ignore[assignment]
        return values

    # ------------------------------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        t = {f"net.{k}": v.detach().clone() for k, v in self.net.state_dict().items()}
        opt_t, opt_groups = optimizer_tensors(self.opt, "opt")
        t.update(opt_t)
        meta = {"format": FORMAT, "config": json.dumps(asdict(self.config)), "step": str(self.step),
                "opt_groups": opt_groups}
        if self.prompts is not None:
            t.update({f"prompts.{k}": v.detach().clone() for k, v in self.prompts.state_dict().items()})
            popt_t, meta["prompt_opt_groups"] = optimizer_tensors(self.prompt_opt, "prompt_opt")
            t.update(popt_t)
        if self.residual is not None:
            t.update({f"residual.{k}": v.detach().clone().float() for k, v in self.residual.tensors().items()})
        if self.previous is not None:
            t.update({f"previous.{k}": v.detach().clone() for k, v in self.previous.state_dict().items()})
        t["rng"] = self.generator.get_state()
        return {k: v.contiguous() for k, v in t.items()}, meta

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``checkpoint.safetensors`` (everything to resume) and ``enhancement.safetensors`` (the network)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state()
        path = save_safetensors(tensors, out / "checkpoint.safetensors", meta)
        checkpoints.save_network(self.net, out / "enhancement.safetensors",
                                 {"method": self.config.method, "step": self.step, "clip": self.config.clip})
        return path

    @classmethod
    def resume(cls, path: str | os.PathLike, data: UnpairedData, clip: ClipModel | None = None) -> Trainer:
        """Rebuild a run from ``checkpoint.safetensors`` (a file or its folder) and continue exactly."""
        path = Path(path)
        path = path / "checkpoint.safetensors" if path.is_dir() else path
        if not path.is_file():
            raise checkpoints.MissingCheckpointError(f"no training checkpoint at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if meta.get("format") != FORMAT:
            raise checkpoints.CheckpointError(f"{path} is not a clipkit enhancement training checkpoint")
        t = load_file(str(path))
        config = TrainConfig(**json.loads(meta["config"]))
        self = cls(config, data, clip)
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        load_optimizer(self.opt, t, "opt", meta["opt_groups"])
        if self.prompts is not None:
            self.prompts.load_state_dict({k[8:]: v for k, v in t.items() if k.startswith("prompts.")})
            load_optimizer(self.prompt_opt, t, "prompt_opt", meta["prompt_opt_groups"])
        if self.residual is not None:
            self.residual = ResidualGuidance.from_tensors({k[9:]: v for k, v in t.items() if k.startswith("residual.")})
        prev = {k[9:]: v for k, v in t.items() if k.startswith("previous.")}
        if prev:
            self.previous = EnhanceNet().eval().requires_grad_(False)
            self.previous.load_state_dict(prev)
        self.generator.set_state(t["rng"])
        self.step = int(meta["step"])
        return self


def load_guide_clip(name: str, weights: str | None = None) -> ClipModel:
    """The guide CLIP: ``tiny-clip`` is the seeded random test model; anything else goes through ``get_clip``."""
    return tiny_clip(0) if name == "tiny-clip" and weights is None else get_clip(name, weights, "cpu")


def train(
    config: TrainConfig,
    data: UnpairedData,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    clip: ClipModel | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
) -> Trainer:
    """Run (or resume) training to the end of the schedule (or ``max_steps`` more steps), saving as it goes."""
    ckpt = Path(out_dir) / "checkpoint.safetensors" if out_dir else None
    trainer = Trainer.resume(ckpt, data, clip) if resume and ckpt and ckpt.is_file() else Trainer(config, data, clip)
    end = trainer.config.total_steps if max_steps is None else min(trainer.config.total_steps,
                                                                   trainer.step + max_steps)
    fit(trainer, end, out_dir, every=trainer.config.save_every, callback=callback, cancel=cancel, progress=progress,
        desc=trainer.config.method, shown=("loss", "prompt_loss", "brightness", "separation", "phase"))
    return trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clipkit train enhance", description=__doc__.split("\n")[0])
    ap.add_argument("--backlit", type=Path, help="folder of backlit images")
    ap.add_argument("--welllit", type=Path, help="folder of well-lit images (unpaired)")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="write N synthetic backlit and N well-lit images to OUT/data and train on them")
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out (its saved settings win)")
    ap.add_argument("--max-images", type=int, default=None)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        kind = type(getattr(defaults, f.name)) if getattr(defaults, f.name) is not None else str
        ap.add_argument("--" + f.name.replace("_", "-"), type=kind, default=getattr(defaults, f.name))
    args = ap.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}).validate()
    if args.synthetic:
        from .synthetic import write_folders

        args.backlit, args.welllit = write_folders(args.out / "data", args.synthetic, max(config.size * 2, 96),
                                                   config.seed)
    if not (args.backlit and args.welllit):
        ap.error("give --backlit and --welllit folders (or --synthetic N)")
    data = UnpairedData.from_folders(args.backlit, args.welllit, config.size, args.max_images)
    trainer = train(config, data, args.out, resume=args.resume)
    print(f"done: {trainer.step} steps; network: {args.out / 'enhancement.safetensors'}")
    return 0


__all__ = ["TrainConfig", "Trainer", "train", "init_network", "ImagePool", "UnpairedData"]

if __name__ == "__main__":
    raise SystemExit(main())
