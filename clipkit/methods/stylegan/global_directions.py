"""StyleCLIP global directions (Patashnik et al., ICCV 2021, section 6): a text edit as one StyleSpace direction,
found without any optimisation from per-channel statistics computed once per generator and CLIP.

Preprocessing (the reference code's ``GetCodeMS`` / ``SingleChannel`` / ``GetFs``): sample 100,000 S codes (seed 5,
truncation 0.7 on the first 8 W+ layers) for each channel's mean μ_c and standard deviation σ_c; then, for each
channel of every modulated conv (ToRGB channels excluded, as the paper), render a set of images with that channel
set to μ_c − kσ_c and μ_c + kσ_c (k = 5), encode both with the CLIP, and keep the unit mean over images of the
unit embedding change: the channel's direction in CLIP space. (The reference code sets each image's channel to
μ_c in place and never restores it, so later channels see earlier ones at their means; here each channel is
perturbed alone.) The paper uses 100 images; the default here is 8 for a 64 px generator on CPU. The perturbations
of one layer share the synthesis up to that layer, which runs once per image; the rest runs in batches of many
channels (``stat_batch`` images per forward through the generator and the CLIP). Measured with the world
generator's architecture on one CPU thread: 8 s for the moments and 4.4 min for the 720 conv channels (0.37 s a
channel); a 1024 px generator would take thousands of CPU hours (``bench/stylegan_edits.py``: extrapolated), so
compute its statistics on a GPU. They are cached as an artifact in ``~/.cache/clipkit/global-directions/`` (or
under ``$CLIPKIT_CACHE_DIR``), keyed by the generator file's sha256, the CLIP and the statistics settings, so
every later edit is a text encoding (0.36 s for a new prompt pair's 160 template sentences with the world CLIP)
and one forward pass (0.05 s).

An edit (``GetDt`` / ``GetBoundary``): Δt = the unit difference of the target and neutral prompts' embeddings
(each averaged over the ImageNet template ensemble); each channel's relevance r_c = ⟨direction_c, Δt⟩; channels
with |r_c| < β are left alone, the others move by Δs_c = α · (r_c / max |r|) · σ_c. The paper's sliders: β in
[0.08, 0.3] (0.15 by default), α in [-10, 10] (4.1). α = 0 redraws the start exactly; channels under β stay
bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import CheckpointError, ParameterError
from clipkit.guidance.prompts import TEMPLATE_SETS, encode_prompt, parse_prompts
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, StepInfo, resolve_settings, run_steps
from clipkit.methods.stylegan.editing import (
    cache_dir,
    check_range,
    conv_layers,
    direction_artifact,
    fast_copy,
    generator_sha256,
    render,
    start_latents,
    style_convs,
    styles_artifact,
    styles_of,
    synthesis_from,
    synthesis_state,
    wplus_index,
)
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import Generator

STATS_KIND = "statistics/global-directions"
STAT_SEED = 5  # the reference code's sampling seed
STAT_CUTOFF = 8  # ... and its truncation cutoff (the first 8 W+ layers)
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


@dataclass
class GlobalDirectionsSettings:
    """Every knob of a global-direction edit; a preset for 'global_directions' holds exactly these keys."""

    neutral: str = "a photo on a plain background"
    target: str = "a photo on a striped background"
    alpha: float = 4.1  # manipulation strength (the paper's notebook default)
    beta: float = 0.15  # disentanglement threshold on |relevance|
    generator: str = DEFAULT_GENERATOR
    seed: int = 0
    count: int = 4
    truncation: float = 0.7
    templates: str = "imagenet"
    stat_samples: int = 100_000  # S codes for each channel's mean and spread (the paper's)
    stat_images: int = 8  # images per channel perturbation (the paper: 100; scaled for a 64 px generator on CPU)
    stat_sigma: float = 5.0  # perturb by +-stat_sigma standard deviations (the paper's)
    stat_truncation: float = 0.7
    stat_batch: int = 128  # images per generator + CLIP forward while computing the statistics
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> GlobalDirectionsSettings:
        parse_prompts(self.neutral)
        parse_prompts(self.target)
        check_range(self, "alpha", -100, 100)
        check_range(self, "beta", 0, 1)
        check_range(self, "truncation", -1, 2)
        check_range(self, "stat_truncation", -1, 2)
        check_range(self, "stat_sigma", 0, 100, low_open=True)
        if not 1 <= self.count <= 64:
            raise ParameterError(f"count={self.count} must be in 1..64")
        if not 2 <= self.stat_samples <= 10_000_000:
            raise ParameterError(f"stat_samples={self.stat_samples} must be in 2..10000000")
        if not 1 <= self.stat_images <= 10_000:
            raise ParameterError(f"stat_images={self.stat_images} must be in 1..10000")
        if not 2 <= self.stat_batch <= 4096:
            raise ParameterError(f"stat_batch={self.stat_batch} must be in 2..4096")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        return self


# ------------------------------------------------------------------------------------------------ statistics
def _stat_params(s: GlobalDirectionsSettings) -> dict:
    return {"samples": s.stat_samples, "images": s.stat_images, "sigma": s.stat_sigma,
            "truncation": s.stat_truncation, "cutoff": STAT_CUTOFF, "seed": STAT_SEED, "pretrained": s.pretrained}


def stats_path(generator: str, clip: ClipModel, s: GlobalDirectionsSettings) -> Path:
    """Where the statistics of (generator file, CLIP, statistics settings) are cached."""
    params = hashlib.sha256(json.dumps(_stat_params(s), sort_keys=True).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", clip.name)
    return cache_dir("global-directions") / f"{generator_sha256(generator)[:16]}-{name}-{params}.safetensors"


@torch.no_grad()
def style_moments(g: Generator, samples: int, truncation: float, chunk: int = 4096
                  ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(mean, std, the first chunk's S codes) of every S layer over ``samples`` sampled codes (float64 sums)."""
    rng = torch.Generator().manual_seed(STAT_SEED)
    sums = sq = None
    first: list[Tensor] = []
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        z = torch.randn(n, g.style_dim, generator=rng).to(g.device)
        w = g.mapping(z)
        wt = g.truncate(w, truncation)
        # = g.styles(g.truncate(w, truncation, STAT_CUTOFF)) without building W+ (the first 8 codes truncated)
        styles = [conv.modulation(wt if wplus_index(name) < STAT_CUTOFF else w)
                  for (name, _), conv in zip(g.style_layers, style_convs(g))]
        if not first:
            first = [t.clone() for t in styles]
        d = [t.double() for t in styles]
        sums = [x.sum(0) for x in d] if sums is None else [a + x.sum(0) for a, x in zip(sums, d)]
        sq = [(x * x).sum(0) for x in d] if sq is None else [a + (x * x).sum(0) for a, x in zip(sq, d)]
        done += n
    mean = [a / samples for a in sums]
    std = [(b / samples - m * m).clamp_min(0).sqrt() for b, m in zip(sq, mean)]
    return [m.float() for m in mean], [v.float() for v in std], first


def compute_statistics(g: Generator, clip: ClipModel, s: GlobalDirectionsSettings, meta: dict,
                       callback: StepCallback | None = None, cancel: CancelToken | None = None,
                       progress: bool = True) -> tuple[Artifact | None, dict[str, float]]:
    """Each conv channel's unit CLIP-space direction (the reference's fs3), with the S means and spreads; None
    when cancelled. Timings: ``moments_s``, ``channels_s``, ``s_per_channel``."""
    t0 = time.perf_counter()
    g = fast_copy(g)  # batches of perturbed codes: the unfused convolutions
    mean, std, first = style_moments(g, s.stat_samples, s.stat_truncation)
    n = min(s.stat_images, first[0].shape[0])
    base = [t[:n] for t in first]
    t_moments = time.perf_counter() - t0
    noise = g.make_noise(1, "const")
    layers = conv_layers(g)
    per = max(1, s.stat_batch // (2 * n))  # channels per forward
    jobs = [(k, c0, min(c0 + per, base[k].shape[1])) for k in layers for c0 in range(0, base[k].shape[1], per)]
    found = {k: torch.zeros(base[k].shape[1], clip.embed_dim) for k in layers}
    states: dict[int, tuple[Tensor, Tensor | None]] = {}

    @torch.no_grad()
    def step(i: int) -> dict[str, float]:
        layer, c0, c1 = jobs[i]
        if layer not in states:  # the synthesis up to this layer, once per image
            states.clear()
            states[layer] = synthesis_state(g, base, noise, layer)
        m = c1 - c0
        reps = 2 * m
        out, skip = states[layer]
        state = (out.repeat(reps, 1, 1, 1), skip.repeat(reps, 1, 1, 1) if skip is not None else None)
        styles = [t.repeat(reps, 1) for t in base]
        edited = styles[layer].view(m, 2, n, -1)
        channels = torch.arange(c0, c1, device=edited.device)
        for sign_index, sign in enumerate((-1.0, 1.0)):  # the reference's alpha = [-5, 5]
            value = mean[layer][c0:c1] + sign * s.stat_sigma * std[layer][c0:c1]
            edited[torch.arange(m), sign_index, :, channels] = value[:, None].to(edited)
        styles[layer] = edited.reshape(reps * n, -1)
        emb = clip.encode_image(to_unit(synthesis_from(g, styles, noise, layer, state))).view(m, 2, n, -1)
        change = F.normalize(emb[:, 1] - emb[:, 0], dim=-1).mean(1)
        found[layer][c0:c1] = F.normalize(change, dim=-1).cpu()
        return {"layer": float(layer), "channels": float(m)}

    history, cancelled, seconds = run_steps(len(jobs), step, callback, cancel, progress=progress,
                                            desc="global directions (once per generator)")
    timings = {"moments_s": t_moments, "channels_s": seconds,
               "s_per_channel": seconds / max(1, sum(j[2] - j[1] for j in jobs[:len(history)]))}
    if cancelled:
        return None, timings
    tensors = {**{f"mean_{i}": m.cpu() for i, m in enumerate(mean)}, **{f"std_{i}": v.cpu() for i, v in enumerate(std)},
               **{f"fs_{k}": found[k] for k in layers}}
    info = {**meta, "layers": layers, "channels": sum(found[k].shape[0] for k in layers), "params": _stat_params(s),
            "timings": timings}
    return Artifact(STATS_KIND, tensors, info), timings


def _lock(key: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


def global_statistics(g: Generator, clip: ClipModel, s: GlobalDirectionsSettings,
                      callback: StepCallback | None = None, cancel: CancelToken | None = None,
                      progress: bool = True) -> tuple[Artifact | None, dict]:
    """The cached statistics for (generator, CLIP, settings), computed and saved on first use. Returns the
    artifact (None if cancelled) and what the record says: its file, whether it was cached, the timings."""
    path = stats_path(s.generator, clip, s)
    with _lock(str(path)):
        if path.is_file():
            try:
                art = Artifact.load(path, STATS_KIND)
                # own (aligned) copies: a file's buffers can round a matrix product differently (start_latents)
                art = Artifact(art.kind, {k: v.clone() for k, v in art.tensors.items()}, art.meta)
                check_statistics(art, g, clip.embed_dim)
                return art, {"stats_file": str(path), "stats_cached": True}
            except (CheckpointError, ParameterError):
                pass  # a stale or damaged cache file: computed again and replaced
        meta = {"generator": s.generator, "generator_sha256": generator_sha256(s.generator), "clip": clip.name}
        art, timings = compute_statistics(g, clip, s, meta, callback, cancel, progress)
        if art is None:
            return None, {"stats_cached": False, **timings}
        path.parent.mkdir(parents=True, exist_ok=True)
        art.save(path)
        return art, {"stats_file": str(path), "stats_cached": False, **timings}


def check_statistics(art: Artifact, g: Generator, dim: int | None = None) -> None:
    """Refuse statistics that do not fit this generator's StyleSpace (and a CLIP of embedding size ``dim``)."""
    for i, (name, channels) in enumerate(g.style_layers):
        for key in (f"mean_{i}", f"std_{i}"):
            t = art.tensors.get(key)
            if t is None or t.shape != (channels,):
                raise CheckpointError(f"global-direction statistics lack {key} for layer '{name}' ({channels})")
    for k in conv_layers(g):
        t = art.tensors.get(f"fs_{k}")
        if t is None or t.ndim != 2 or t.shape[0] != g.style_layers[k][1] or (dim and t.shape[1] != dim):
            raise CheckpointError(f"global-direction statistics lack fs_{k}")


# ------------------------------------------------------------------------------------------------ the edit
def text_direction(clip: ClipModel, neutral: str, target: str, templates: str = "imagenet") -> Tensor:
    """Δt: the unit difference of the target and neutral prompts' embeddings, each over the template ensemble."""
    t = TEMPLATE_SETS[templates]
    return F.normalize(encode_prompt(clip, target, t) - encode_prompt(clip, neutral, t), dim=-1)


def relevance(stats: Artifact, g: Generator, dt: Tensor) -> dict[int, Tensor]:
    """r_c = ⟨channel direction, Δt⟩ for every channel of every conv layer, by S layer index."""
    return {k: stats.tensors[f"fs_{k}"].to(dt) @ dt for k in conv_layers(g)}


def style_direction(stats: Artifact, g: Generator, rel: dict[int, Tensor], beta: float
                    ) -> tuple[list[Tensor], list[Tensor]]:
    """(Δs at α = 1, the channels it moves) per S layer: channels with |r| >= beta move by (r / max|r|) · σ."""
    peak = max(float(r.abs().max()) for r in rel.values()) if rel else 0.0
    direction, chosen = [], []
    for i, (_, channels) in enumerate(g.style_layers):
        r = rel.get(i)
        if r is None or peak == 0:
            direction.append(torch.zeros(1, channels, device=g.device))
            chosen.append(torch.zeros(1, channels, dtype=torch.bool, device=g.device))
            continue
        mask = r.abs() >= beta
        std = stats.tensors[f"std_{i}"].to(g.device)
        direction.append(torch.where(mask, r.to(g.device) / peak * std, torch.zeros_like(std)).reshape(1, -1))
        chosen.append(mask.to(g.device).reshape(1, -1))
    return direction, chosen


def apply_direction(styles: list[Tensor], direction: list[Tensor], chosen: list[Tensor], alpha: float
                    ) -> list[Tensor]:
    """s + α Δs on the chosen channels; every other channel keeps its exact value."""
    return [torch.where(c, s + alpha * d, s) for s, d, c in zip(styles, direction, chosen)]


def global_directions(
    settings: GlobalDirectionsSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    latent: Artifact | None = None,
    **overrides,
) -> RunResult:
    """Edit the start latents along the neutral -> target direction; the first run for a generator and CLIP
    computes (and caches) the channel statistics."""
    s = resolve_settings(GlobalDirectionsSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    clip = clip or get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    start = start_latents(g, latent, s.seed, s.count, s.truncation)
    stats, info = global_statistics(g, clip, s, callback, cancel, progress)
    record = {"method": "global_directions", **asdict(s), "clip": clip.name, **start.meta,
              **{k: v for k, v in info.items() if k in ("stats_file", "stats_cached")}}
    timings = {"load_s": t_load, **{k: v for k, v in info.items() if k.endswith("_s") or k == "s_per_channel"}}
    if stats is None:
        return RunResult(render(g, start).cpu(), record, [], timings, cancelled=True)
    t1 = time.perf_counter()
    dt = text_direction(clip, s.neutral, s.target, s.templates)
    rel = relevance(stats, g, dt)
    direction, chosen = style_direction(stats, g, rel, s.beta)
    edited = apply_direction(styles_of(g, start.wplus), direction, chosen, s.alpha)
    images = render(g, start, styles=edited)
    timings["edit_s"] = time.perf_counter() - t1
    record["channels"] = int(sum(int(c.sum()) for c in chosen))
    if callback is not None:
        callback(StepInfo(1, 1, {"channels": float(record["channels"])}, images))
    meta = {"neutral": s.neutral, "target": s.target, "beta": s.beta, "channels": record["channels"],
            "method": "global_directions", "strength": "alpha"}
    artifacts = {"direction": direction_artifact(direction, g, s.generator, meta),
                 "styles": styles_artifact(edited, start, s.generator, {**meta, "alpha": s.alpha})}
    return RunResult(images.cpu(), record, [], timings, artifacts=artifacts)
