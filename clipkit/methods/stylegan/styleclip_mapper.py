"""StyleCLIP latent mapper (Patashnik et al., ICCV 2021, section 5): one small network per prompt that edits any W+
latent in a single forward pass.

The mapper is the reference code's ``LevelsMapper``: the W+ layers are split into coarse (0-3), medium (4-7) and
fine (8 and up) groups (the 4-8, 16-32 and 64+ px layers of a 1024 px generator; a generator with fewer layers gets
fewer groups) and each group has its own MLP of PixelNorm + 4 EqualLinear layers (learning-rate multiplier 0.01,
leaky ReLU), applied to each w of the group. The edit is ``w' = w + α · M(w)``, trained at α = 0.1.

Training (``styleclip_mapper_train``, its own method: it takes other settings than applying, and runs in the one
training loop, ``clipkit.guidance.training.fit``, with a progress bar and cancel like every run) minimises
λ_CLIP (1 − cos(E_I(G(w')), E_T(t))) + λ_L2 mean((w' − w)²) (+ λ_ID identity) over latents sampled at truncation
0.7, with the paper's λ_CLIP 1 and λ_L2 0.8 at batch 2. Scaled for a 64 px generator on CPU: 1,000 steps instead of
the paper's 50,000, so plain Adam at lr 0.1 instead of its Ranger at lr 0.5 (RAdam + Lookahead through the
mapper's 0.01 learning-rate multiplier barely moves it in 1,000 steps; ``optimizer="ranger", lr=0.5`` gives the
paper's, kept as a choice); λ_ID 0, as the paper uses it only for faces with an identity network
(``identity_net=``; ``id_lambda`` > 0 without one uses the CLIP's early features, ``editing.Identity``). Latents
are drawn fresh every step instead of from a fixed set of 5,000. The trained mapper is an artifact
"network/styleclip-mapper" (safetensors); ``styleclip_mapper`` applies it (α = 0: the start exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from clipkit.guidance.artifacts import Artifact, as_artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import CheckpointError, ParameterError
from clipkit.guidance.guide import Guide, Term
from clipkit.guidance.prompts import TEMPLATE_SETS, parse_prompts
from clipkit.guidance.runs import (
    CancelToken,
    RunResult,
    StepCallback,
    StepInfo,
    check_steps,
    resolve_settings,
)
from clipkit.guidance.training import Steps, fit
from clipkit.methods.stylegan.editing import (
    LATENT_KIND,
    CosinePromptTerm,
    Identity,
    IdentityTerm,
    check_range,
    fast_copy,
    generator_sha256,
    render,
    start_latents,
)
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import EqualLinear, Generator, PixelNorm

MAPPER_KIND = "network/styleclip-mapper"
GROUPS = (("coarse", 0, 4), ("medium", 4, 8), ("fine", 8, None))
TRAIN_ALPHA = 0.1  # the reference code's w + 0.1 * M(w)


class Mapper(nn.Module):
    """PixelNorm + ``depth`` EqualLinear (lr_mul 0.01, leaky ReLU): the reference's per-group MLP."""

    def __init__(self, dim: int, depth: int = 4, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(PixelNorm(), *(EqualLinear(dim, dim, lr_mul=0.01, activation="fused_lrelu",
                                                            generator=generator) for _ in range(depth)))

    def forward(self, w: Tensor) -> Tensor:
        # each w on its own ([N, D] rows): the reference feeds [B, layers, D] to a PixelNorm over dim 1, which
        # normalises across the group's layers instead, a side effect of its 3-D input
        shape = w.shape
        return self.net(w.reshape(-1, shape[-1])).reshape(shape)


class LevelsMapper(nn.Module):
    """Coarse / medium / fine mappers over the W+ layer groups; groups a generator does not have are left out."""

    def __init__(self, n_latent: int, style_dim: int, depth: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.n_latent, self.style_dim, self.depth = n_latent, style_dim, depth
        self.spans: list[tuple[str, int, int]] = []
        self.mappers = nn.ModuleDict()
        for name, lo, hi in GROUPS:
            lo, hi = min(lo, n_latent), min(hi if hi is not None else n_latent, n_latent)
            if hi > lo:
                self.spans.append((name, lo, hi))
                self.mappers[name] = Mapper(style_dim, depth, gen)

    def forward(self, wplus: Tensor) -> Tensor:
        """The edit direction M(w) for W+ ``[B, n_latent, D]`` (same shape)."""
        return torch.cat([self.mappers[name](wplus[:, lo:hi]) for name, lo, hi in self.spans], dim=1)

    def edit(self, wplus: Tensor, alpha: float) -> Tensor:
        return wplus + alpha * self(wplus)


class Ranger(torch.optim.Optimizer):
    """The reference mapper's optimiser: RAdam with gradient centralisation, wrapped in Lookahead (every ``k``
    steps the weights move ``alpha`` of the way back from the fast weights to the slow ones)."""

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.5, k: int = 6,
                 betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5) -> None:
        params = list(params)
        super().__init__(params, {"lr": lr})
        self.inner = torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps)
        self.alpha, self.k, self.count = alpha, k, 0
        self.slow = [p.detach().clone() for p in params]
        self.params = params

    @torch.no_grad()
    def step(self, closure=None):
        for group, inner in zip(self.param_groups, self.inner.param_groups):
            inner["lr"] = group["lr"]
        for p in self.params:
            if p.grad is not None and p.grad.dim() > 1:  # gradient centralisation (weights, not biases)
                p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))
        self.inner.step()
        self.count += 1
        if self.count % self.k == 0:
            for p, slow in zip(self.params, self.slow):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)


@dataclass(eq=False)
class LatentMSETerm(Term):
    """The mapper's λ_L2 term: mean squared W+ change (the reference's MSELoss)."""

    name: str = "latent_l2"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        return (ctx["latent"] - ctx["latent_ref"]).pow(2).mean()


# ================================================================================================== training
@dataclass
class MapperTrainSettings:
    """Every knob of training a StyleCLIP mapper; a preset for 'styleclip_mapper_train' holds exactly these."""

    prompt: str = "a photo on a striped background"
    generator: str = DEFAULT_GENERATOR
    seed: int = 0
    steps: int = 1000  # the paper: 50,000 on a GPU (scaled for a 64 px generator on CPU)
    batch: int = 2
    lr: float = 0.1  # the paper: 0.5 with Ranger over 50,000 steps
    optimizer: str = "adam"  # the paper's "ranger" moves the mapper too little in 1,000 steps
    truncation: float = 0.7  # of the training latents
    alpha: float = TRAIN_ALPHA
    clip_lambda: float = 1.0
    l2_lambda: float = 0.8
    id_lambda: float = 0.0  # the paper: 0.1 for faces (ArcFace); > 0 without a network: CLIP early features
    depth: int = 4
    templates: str = "plain"
    preview_count: int = 4  # sampled images shown edited at the end (seeds seed .. seed + n - 1)
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> MapperTrainSettings:
        parse_prompts(self.prompt)
        check_steps(self.steps)
        if not 1 <= self.batch <= 64:
            raise ParameterError(f"batch={self.batch} must be in 1..64")
        if self.optimizer not in ("ranger", "adam"):
            raise ParameterError(f"optimizer='{self.optimizer}' must be 'ranger' or 'adam'")
        if not 1 <= self.depth <= 16:
            raise ParameterError(f"depth={self.depth} must be in 1..16")
        if not 1 <= self.preview_count <= 16:
            raise ParameterError(f"preview_count={self.preview_count} must be in 1..16")
        check_range(self, "lr", 0, 10, low_open=True)
        check_range(self, "truncation", -1, 2)
        check_range(self, "alpha", -10, 10)
        for name in ("clip_lambda", "l2_lambda", "id_lambda"):
            check_range(self, name, 0, 1e6)
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        return self


def mapper_artifact(mapper: LevelsMapper, meta: dict[str, Any]) -> Artifact:
    tensors = {k: v.detach().cpu().clone() for k, v in mapper.state_dict().items()}
    return Artifact(MAPPER_KIND, tensors, {"n_latent": mapper.n_latent, "style_dim": mapper.style_dim,
                                           "depth": mapper.depth, "groups": [list(s) for s in mapper.spans], **meta})


def mapper_from_artifact(artifact: Artifact | str, g: Generator) -> tuple[LevelsMapper, dict[str, Any]]:
    """The mapper an artifact holds, checked against the generator it will edit."""
    art = as_artifact(artifact, MAPPER_KIND)
    meta = art.meta
    try:
        n_latent, style_dim, depth = int(meta["n_latent"]), int(meta["style_dim"]), int(meta["depth"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the mapper artifact's metadata lacks its shape ({e})") from e
    if (n_latent, style_dim) != (g.n_latent, g.style_dim):
        raise ParameterError(f"the mapper was trained for W+ [{n_latent}, {style_dim}] ({meta.get('generator')}), "
                             f"this generator has [{g.n_latent}, {g.style_dim}]")
    if not 1 <= depth <= 16:
        raise CheckpointError(f"mapper depth {depth} is out of range")
    mapper = LevelsMapper(n_latent, style_dim, depth)
    expected = {k: tuple(v.shape) for k, v in mapper.state_dict().items()}
    if {k: tuple(v.shape) for k, v in art.tensors.items()} != expected:
        raise CheckpointError(f"the mapper artifact's tensors do not match a mapper for [{n_latent}, {style_dim}]")
    mapper.load_state_dict(art.tensors)
    return mapper.to(g.device).eval().requires_grad_(False), meta


def styleclip_mapper_train(
    settings: MapperTrainSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    identity_net: Callable[[Tensor], Tensor] | None = None,
    **overrides,
) -> RunResult:
    """Train a mapper for the prompt; the result shows ``preview_count`` samples edited and holds the mapper."""
    s = resolve_settings(MapperTrainSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    clip = clip or get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    mapper = LevelsMapper(g.n_latent, g.style_dim, s.depth, seed=s.seed).to(g.device).train()
    params = list(mapper.parameters())
    opt = Ranger(params, lr=s.lr) if s.optimizer == "ranger" else torch.optim.Adam(params, lr=s.lr)
    rng = torch.Generator().manual_seed(s.seed)
    terms = [CosinePromptTerm(weight=s.clip_lambda, prompts=s.prompt, templates=TEMPLATE_SETS[s.templates]),
             LatentMSETerm(weight=s.l2_lambda)]
    identity = Identity(clip, identity_net) if s.id_lambda > 0 else None
    if identity is not None:
        terms.append(IdentityTerm(weight=s.id_lambda, identity=identity))
    guide = Guide(clip, terms, generator=rng)
    noise = g.make_noise(1, "const")
    fast = fast_copy(g)
    preview_start = start_latents(g, None, s.seed, s.preview_count, s.truncation)

    def step(_: int) -> dict[str, float]:
        z = torch.randn(s.batch, g.style_dim, generator=rng).to(g.device)
        with torch.no_grad():
            w = g.w_to_wplus(g.truncate(g.mapping(z), s.truncation))
            ref = identity.reference(to_unit(fast.synthesis(w, noise=noise))) if identity is not None else None
        w_hat = mapper.edit(w, s.alpha)
        out = guide(to_unit(fast.synthesis(w_hat, noise=noise)), latent=w_hat, latent_ref=w, identity_ref=ref)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out.values

    def preview() -> torch.Tensor:
        with torch.no_grad():
            return render(g, preview_start, mapper.edit(preview_start.wplus, s.alpha))

    def show(info: StepInfo) -> None:  # previews with the first step, every 50th after it and the last
        due = (info.step - 1) % 50 == 0 or info.step == info.total
        callback(replace(info, preview=preview() if due else None))

    done = fit(Steps(step), s.steps, callback=show if callback is not None else None, cancel=cancel,
               progress=progress, desc="styleclip mapper")
    history, cancelled, seconds = done.history, done.cancelled, done.seconds
    mapper.eval().requires_grad_(False)
    with torch.no_grad():
        final = render(g, preview_start, mapper.edit(preview_start.wplus, s.alpha))
    record = {"method": "styleclip_mapper_train", **asdict(s), "clip": clip.name,
              "identity": identity.name if identity is not None else None}
    meta = {"prompt": s.prompt, "generator": s.generator, "generator_sha256": generator_sha256(s.generator),
            "clip": clip.name, "alpha": s.alpha, "steps_done": len(history), "settings": record}
    return RunResult.from_loop(final.cpu(), record, history, seconds, cancelled, t_load,
                               artifacts={"mapper": mapper_artifact(mapper, meta)})


# ================================================================================================== applying
@dataclass
class MapperSettings:
    """Applying a trained mapper; a preset for 'styleclip_mapper' holds exactly these keys."""

    generator: str = DEFAULT_GENERATOR
    seed: int = 0
    count: int = 4
    truncation: float = 0.7
    alpha: float = TRAIN_ALPHA  # the strength it was trained at; 0 = the start unchanged

    def validate(self) -> MapperSettings:
        if not 1 <= self.count <= 64:
            raise ParameterError(f"count={self.count} must be in 1..64")
        check_range(self, "truncation", -1, 2)
        check_range(self, "alpha", -10, 10)
        return self


def styleclip_mapper(
    settings: MapperSettings | None = None,
    clip: object | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
    mapper: Artifact | None = None,
    latent: Artifact | None = None,
    **overrides,
) -> RunResult:
    """Edit the start latents with a trained mapper in one forward pass: ``w + alpha * M(w)``."""
    s = resolve_settings(MapperSettings, settings, overrides)
    if mapper is None:
        raise ParameterError("styleclip_mapper needs mapper=<a 'network/styleclip-mapper' artifact or its file>; "
                             "train one with styleclip_mapper_train")
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    mapper = as_artifact(mapper, MAPPER_KIND)
    net, meta = mapper_from_artifact(mapper, g)
    t_load = time.perf_counter() - t0
    start = start_latents(g, latent, s.seed, s.count, s.truncation)
    record = {"method": "styleclip_mapper", **asdict(s), "mapper_prompt": meta.get("prompt"),
              "mapper_sha256": mapper.sha256(), **start.meta}
    if cancel is not None and cancel.cancelled:
        return RunResult(render(g, start).cpu(), record, [], {"load_s": t_load}, cancelled=True)
    t1 = time.perf_counter()
    with torch.no_grad():
        edited = net.edit(start.wplus, s.alpha)
        images = render(g, start, edited)
    t_apply = time.perf_counter() - t1
    if callback is not None:
        callback(StepInfo(1, 1, {}, images))
    art = Artifact(LATENT_KIND, start.artifact_tensors(edited),
                   {"generator": s.generator, **start.artifact_meta(), "prompt": meta.get("prompt"),
                    "method": "styleclip_mapper"})
    return RunResult(images.cpu(), record, [], {"load_s": t_load, "apply_s": t_apply}, artifacts={"latent": art})
