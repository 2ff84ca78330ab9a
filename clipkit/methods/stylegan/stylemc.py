"""StyleMC (Kocasari et al., WACV 2022): one global StyleSpace direction per prompt, found in seconds.

Finding (the reference ``find_direction.py``): S codes of a batch of seeds (1..128, truncation 0.7); one pass over
them in mini-batches of 4, each adding the shared direction Δs to the codes and scoring −cos(E_I(G(s + Δs)),
E_T(prompt)) summed over the batch + λ_ID · identity(G(s + Δs), G(s)). Gradients accumulate over two mini-batches,
then Δs ← Δs − 5 · grad (plain gradient steps of size 5). Only the modulated convs from 8 to 64 px are edited (the 4
px conv, every ToRGB and the layers above 64 px keep their gradients at zero, as in the reference). Sign
consistency: from the third step on, each channel whose gradient changed sign between consecutive steps gets a
count; channels that flipped more than (seeds / batch) / 4 times are pruned (Δs = 0). At apply time the edit is s +
change_power · Δs (the reference's example: 50).

The identity term is the reference's ArcFace loss (power "high" = 2 in its example) when a face network is given
(``identity_net=``), else the CLIP's early features stand in (``editing.Identity``). Defaults are the reference's
(128 seeds, batch 4, step 5, identity 2, change power 50); at 64 px the 128 seeds take 8 s on one CPU thread
(measured), so nothing is scaled. The reference renders 1024 px generators only up to 256 px while finding (the CLIP
sees 224 px); the 64 px generators here render whole. A found direction is an artifact "direction/stylespace"; given
one (``direction=``), the method only applies it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.guidance.artifacts import Artifact, as_artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.prompts import TEMPLATE_SETS, encode_prompt, parse_prompts
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, StepInfo, resolve_settings, run_steps
from clipkit.methods.stylegan.editing import (
    DIRECTION_KIND,
    Identity,
    check_range,
    conv_layers,
    direction_artifact,
    direction_from_artifact,
    fast_copy,
    render,
    start_latents,
    styles_artifact,
    styles_of,
)
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import Generator
from clipkit.methods.stylegan.sample import latents_for_seeds


@dataclass
class StyleMCSettings:
    """Every knob of StyleMC; a preset for 'stylemc' holds exactly these keys."""

    prompt: str = "a photo on a striped background"
    generator: str = DEFAULT_GENERATOR
    seed: int = 0  # the start: image i is seed + i (ignored when a latent artifact is given)
    count: int = 4
    truncation: float = 0.7
    change_power: float = 50.0  # the strength at apply time (the reference's example); 0 = the start unchanged
    find_seed: int = 1  # the direction is found over seeds find_seed .. find_seed + find_seeds - 1 (1-128)
    find_seeds: int = 128
    batch: int = 4
    step_size: float = 5.0
    identity_weight: float = 2.0  # the reference's "high"; medium 0.5, low 0.1, none 0
    prune: bool = True  # the sign-consistency pruning
    min_resolution: int = 8  # edited layers: the convs from 8 to 64 px
    max_resolution: int = 64
    templates: str = "plain"  # the reference encodes the prompt as written
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> StyleMCSettings:
        parse_prompts(self.prompt)
        if not 1 <= self.count <= 64:
            raise ParameterError(f"count={self.count} must be in 1..64")
        if not 2 <= self.find_seeds <= 100_000:
            raise ParameterError(f"find_seeds={self.find_seeds} must be in 2..100000")
        if not 1 <= self.batch <= min(256, self.find_seeds):
            raise ParameterError(f"batch={self.batch} must be in 1..{min(256, self.find_seeds)}")
        check_range(self, "truncation", -1, 2)
        check_range(self, "change_power", -1e4, 1e4)
        check_range(self, "step_size", 0, 1e4, low_open=True)
        check_range(self, "identity_weight", 0, 1e4)
        if not 4 <= self.min_resolution <= self.max_resolution:
            raise ParameterError(f"min_resolution={self.min_resolution} and max_resolution={self.max_resolution} "
                                 "must satisfy 4 <= min <= max")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        return self


def finding_styles(g: Generator, s: StyleMCSettings) -> list[Tensor]:
    """The S codes of the finding seeds (each mapped alone, like ``stylegan``)."""
    seeds = list(range(s.find_seed, s.find_seed + s.find_seeds))
    z = latents_for_seeds(g.style_dim, seeds).to(g.device)
    with torch.no_grad():
        wplus = g.w_to_wplus(torch.cat([g.truncate(g.mapping(z[i:i + 1]), s.truncation) for i in range(len(seeds))]))
    return [t.detach() for t in g.styles(wplus)]


def clip_cos_loss(g: Generator, clip: ClipModel, styles: list[Tensor], direction: list[Tensor], text: Tensor,
                  power: float = 1.0) -> Tensor:
    """StyleMC's CLIP term, −cos(E_I(G(s + power Δs)), E_T), summed over the images."""
    images = to_unit(g.synthesis(styles=[st + power * d for st, d in zip(styles, direction)],
                                 noise=g.make_noise(1, "const")))
    return -F.cosine_similarity(clip.encode_image(images), text[None]).sum()


def find_direction(g: Generator, clip: ClipModel, s: StyleMCSettings,
                   identity_net: Callable[[Tensor], Tensor] | None = None,
                   callback: StepCallback | None = None, cancel: CancelToken | None = None,
                   progress: bool = True) -> tuple[list[Tensor], dict, list[dict[str, float]], bool, float]:
    """(Δs per layer, facts for the record, per-batch history, cancelled, seconds) for the prompt."""
    styles = finding_styles(g, s)
    g = fast_copy(g)
    text = encode_prompt(clip, s.prompt, TEMPLATE_SETS[s.templates]).to(g.device)
    edited = set(conv_layers(g, s.min_resolution, s.max_resolution))
    direction = [torch.zeros(1, c, device=g.device, requires_grad=i in edited)
                 for i, (_, c) in enumerate(g.style_layers)]
    params = [direction[i] for i in sorted(edited)]
    if not params:
        raise ParameterError(f"no modulated conv between {s.min_resolution} and {s.max_resolution} px in this "
                             f"generator (its layers: {', '.join(n for n, _ in g.style_layers)})")
    identity = Identity(clip, identity_net) if s.identity_weight > 0 else None
    noise = g.make_noise(1, "const")
    batches = [(i, min(i + s.batch, s.find_seeds)) for i in range(0, s.find_seeds, s.batch)]
    flips = [torch.zeros_like(p) for p in params]
    grads: list[list[Tensor]] = []

    def step(i: int) -> dict[str, float]:
        lo, hi = batches[i]
        batch = [t[lo:hi] for t in styles]
        values = {}
        if identity is not None:
            with torch.no_grad():
                ref = identity.reference(to_unit(g.synthesis(styles=batch, noise=noise)))
        images = to_unit(g.synthesis(styles=[b + d for b, d in zip(batch, direction)], noise=noise))
        cos = -F.cosine_similarity(clip.encode_image(images), text[None]).sum()
        loss = cos
        values["clip"] = float(cos.detach()) / (hi - lo)
        if identity is not None:
            ident = identity.loss(images, ref)
            loss = loss + s.identity_weight * ident
            values["identity"] = float(ident.detach())
        loss.backward()
        values["loss"] = float(loss.detach())
        if i % 2 == 1 or i == len(batches) - 1:  # the reference steps after every second batch
            with torch.no_grad():
                grad = [p.grad.clone() for p in params]
                for p, gr in zip(params, grad):
                    p.sub_(s.step_size * gr)
                    p.grad = None
                if len(grads) >= 2 and i > 3:  # consecutive steps' gradients of opposite sign
                    for f, a, b in zip(flips, grads[-1], grad):
                        f += (a * b < 0).float()
                grads.append(grad)
        return values

    history, cancelled, seconds = run_steps(len(batches), step, callback, cancel, progress=progress,
                                            desc="stylemc")
    limit = (s.find_seeds / s.batch) / 4
    pruned = 0
    with torch.no_grad():
        for p, f in zip(params, flips):
            p.requires_grad_(False)
            if s.prune:
                pruned += int(((f > limit) & (p != 0)).sum())
                p.masked_fill_(f > limit, 0.0)
    out = [d.detach() for d in direction]
    facts = {"gradient_steps": len(grads), "pruned_channels": pruned,
             "channels": int(sum(int((d != 0).sum()) for d in out)), "identity": identity.name if identity else None}
    return out, facts, history, cancelled, seconds


def stylemc(
    settings: StyleMCSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    latent: Artifact | None = None,
    direction: Artifact | None = None,
    identity_net: Callable[[Tensor], Tensor] | None = None,
    **overrides,
) -> RunResult:
    """Find the prompt's S direction (or take ``direction=``) and apply it to the start latents at change_power."""
    s = resolve_settings(StyleMCSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    if direction is None:
        clip = clip or get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    start = start_latents(g, latent, s.seed, s.count, s.truncation)
    record = {"method": "stylemc", **asdict(s), **start.meta}
    history, cancelled, seconds = [], False, 0.0
    if direction is None:
        found, facts, history, cancelled, seconds = find_direction(g, clip, s, identity_net, callback, cancel,
                                                                   progress)
        record.update({"clip": clip.name, "mode": "find", **facts})
        dir_art = direction_artifact(found, g, s.generator, {"prompt": s.prompt, "method": "stylemc",
                                                             "strength": "change_power", **facts})
    else:
        dir_art = as_artifact(direction, DIRECTION_KIND)
        found = direction_from_artifact(dir_art, g)
        record.update({"mode": "apply", "direction_sha256": dir_art.sha256(), "direction_prompt":
                       dir_art.meta.get("prompt") or dir_art.meta.get("target")})
    t1 = time.perf_counter()
    with torch.no_grad():
        edited = [st + s.change_power * d for st, d in zip(styles_of(g, start.wplus), found)]
        images = render(g, start, styles=edited)
    t_apply = time.perf_counter() - t1
    if direction is not None and callback is not None:
        callback(StepInfo(1, 1, {}, images))
    result = RunResult.from_loop(images.cpu(), record, history, seconds, cancelled, t_load,
                                 artifacts={"direction": dir_art,
                                            "styles": styles_artifact(edited, start, s.generator,
                                                                      {"change_power": s.change_power})})
    result.timings["apply_s"] = t_apply
    if direction is not None:
        result.timings.pop("optimise_s", None)
        result.timings.pop("s_per_step", None)
    return result
