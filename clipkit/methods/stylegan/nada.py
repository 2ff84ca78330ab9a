"""StyleGAN-NADA (Gal et al., SIGGRAPH 2022): adapt a generator to a domain described by text, with no images.

Two copies of the generator: a frozen one and a trainable one, fed the same latents. The trainable copy learns so
that its images move away from the frozen copy's in the direction the text moves in CLIP space, source -> target
(the directional loss, ``DirectionalTerm`` with the frozen images as paired sources; each prompt averaged over the
ImageNet template ensemble). Adaptive layer freezing (the reference ``determine_opt_layers``): before each step,
latents of a batch of 8 are optimised for one SGD step (lr 0.01) in W+ against the global CLIP loss toward the
target text; the k layers whose W+ codes moved most are the only ones trained in that step (the whole modulated
conv: weights, affine, noise strength, bias; ToRGB layers, the mapping and the constant stay frozen, as in the
reference). A W+ code is ranked for the conv it drives (code i: the i-th modulated conv), so the last code, read
only by the last ToRGB, never competes. Adam at lr 0.002 × 4/5 with betas (0, 0.99^(4/5)) (the reference's StyleGAN2
settings), batch 2, training latents untruncated, fresh noise each step shared by the two copies (the reference
draws each copy's own, which mixes a noise difference into the image direction). While the copies still draw the
same images (the first step) the cosine is 0/0; its first-order form takes its place.

Defaults are the reference's (301 iterations in its example, here 300; k is tuned per domain there, from 1 (its
options' default) to all 18 layers of a 1024 px generator (its README's example); here 4 of the 9 convs of a 64 px
generator). 300 steps of a 64 px generator take 3.3 min on one CPU thread (measured). The result shows, for each
start latent, the frozen image and its adapted twin side by side: images [original 0, adapted 0, original 1, ...].
The adapted generator is an artifact "network/stylegan-nada" holding only the tensors that changed, with the base
generator's sha256; given one (``network=``), the method only applies it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.guidance.artifacts import Artifact, as_artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import CheckpointError, ParameterError
from clipkit.guidance.guide import DirectionalTerm, Guide
from clipkit.guidance.prompts import TEMPLATE_SETS, parse_prompts
from clipkit.guidance.runs import (
    CancelToken,
    RunResult,
    StepCallback,
    StepInfo,
    check_steps,
    resolve_settings,
    run_steps,
)
from clipkit.methods.stylegan.editing import (
    LATENT_KIND,
    CosinePromptTerm,
    Start,
    check_range,
    fast_copy,
    generator_sha256,
    render,
    start_latents,
)
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import Generator

NADA_KIND = "network/stylegan-nada"
EQUAL = 1e-6  # images closer than this (max abs, in [0, 1]) count as equal
REG_RATIO = 4 / 5  # the reference's g_reg_every / (g_reg_every + 1), applied to lr and betas


@dataclass
class NadaSettings:
    """Every knob of StyleGAN-NADA; a preset for 'nada' holds exactly these keys."""

    source: str = "a bright photo"
    target: str = "a dark photo"
    generator: str = DEFAULT_GENERATOR
    seed: int = 0  # the training draws and the shown images (seed + i)
    count: int = 4  # start latents shown as original / adapted pairs
    truncation: float = 0.7  # of the shown images (training latents are untruncated)
    steps: int = 300
    batch: int = 2
    lr: float = 0.002
    layers_k: int = 4  # layers trained per step (adaptive freezing)
    layer_iters: int = 1  # W+ optimisation steps that pick them (0: train every conv, no freezing)
    layer_batch: int = 8
    layer_lr: float = 0.01
    templates: str = "imagenet"
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> NadaSettings:
        parse_prompts(self.source)
        parse_prompts(self.target)
        check_steps(self.steps)
        if not 1 <= self.count <= 32:
            raise ParameterError(f"count={self.count} must be in 1..32")
        if not 1 <= self.batch <= 64 or not 1 <= self.layer_batch <= 64:
            raise ParameterError(f"batch={self.batch} and layer_batch={self.layer_batch} must be in 1..64")
        if not 1 <= self.layers_k <= 64:
            raise ParameterError(f"layers_k={self.layers_k} must be in 1..64")
        if not 0 <= self.layer_iters <= 100:
            raise ParameterError(f"layer_iters={self.layer_iters} must be in 0..100")
        check_range(self, "truncation", -1, 2)
        check_range(self, "lr", 0, 1, low_open=True)
        check_range(self, "layer_lr", 0, 100, low_open=True)
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        return self


def conv_modules(g: Generator) -> list[tuple[str, nn.Module]]:
    """(name, module) of each modulated 3x3 conv in W+ order: code i drives conv i."""
    return [("conv1", g.conv1)] + [(f"convs.{j}", m) for j, m in enumerate(g.convs)]


def pick_layers(trainable: Generator, guide: Guide, w: torch.Tensor, s: NadaSettings,
                rng: torch.Generator) -> list[int]:
    """The reference's adaptive layer choice: a few SGD steps on W+ toward the target, the k convs whose codes
    moved most (mean absolute change over the batch and the code's dimensions)."""
    start = w.detach()
    codes = start.clone().requires_grad_(True)
    opt = torch.optim.SGD([codes], lr=s.layer_lr)
    for _ in range(s.layer_iters):
        noise = trainable.make_noise(codes.shape[0], "random", rng)
        loss = guide(to_unit(trainable.synthesis(codes, noise=noise))).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    moved = (codes.detach() - start).abs().mean(-1).mean(0)[: trainable.num_layers]
    k = min(s.layers_k, trainable.num_layers)
    return sorted(torch.topk(moved, k).indices.tolist())


def first_order_directional(clip: ClipModel, term: DirectionalTerm, images: torch.Tensor,
                            frozen: torch.Tensor) -> torch.Tensor:
    """1 - ⟨E(image) - E(frozen), Δt̂⟩: where the copies still agree, the direction the loss asks the image
    embedding to take, without the 1/|ΔI| blow-up of the cosine at ΔI = 0 (which would swamp Adam's second-moment
    estimate for hundreds of steps)."""
    dt = F.normalize(term.tgt_text - term.src_text, dim=-1)
    with torch.no_grad():
        src = clip.encode_image(frozen)
    return 1 - ((clip.encode_image(images) - src) @ dt).mean()


def changed_tensors(adapted: Generator, base: Generator) -> dict[str, torch.Tensor]:
    """The state-dict entries the adaptation changed (everything else is the base generator's)."""
    ref = base.state_dict()
    return {k: v.detach().cpu().clone() for k, v in adapted.state_dict().items() if not torch.equal(v, ref[k])}


def nada_artifact(adapted: Generator, base: Generator, meta: dict) -> Artifact:
    return Artifact(NADA_KIND, changed_tensors(adapted, base), meta)


def adapted_generator(base: Generator, artifact: Artifact | str, generator: str) -> tuple[Generator, dict]:
    """A copy of ``base`` with an adaptation's tensors, checked against the generator file it was trained from."""
    art = as_artifact(artifact, NADA_KIND)
    want = art.meta.get("generator_sha256")
    have = generator_sha256(generator)
    if want and want != have:
        raise ParameterError(f"this adaptation was trained from another generator ({art.meta.get('generator')}, "
                             f"sha256 {str(want)[:12]}...), not {generator} ({have[:12]}...)")
    state = base.state_dict()
    for k, v in art.tensors.items():
        if k not in state or tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"the adaptation's tensor '{k}' does not fit the generator")
    adapted = copy.deepcopy(base)
    adapted.load_state_dict({**state, **{k: v.to(state[k]) for k, v in art.tensors.items()}})
    return adapted.eval().requires_grad_(False), art.meta


def nada(
    settings: NadaSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    latent: Artifact | None = None,
    network: Artifact | None = None,
    **overrides,
) -> RunResult:
    """Adapt a copy of the generator from source to target text (or take ``network=``); returns each start
    latent's original and adapted image side by side, and the adaptation."""
    s = resolve_settings(NadaSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    if network is None:
        clip = clip or get_clip(s.model, s.pretrained, g.device)
    t_load = time.perf_counter() - t0
    start = start_latents(g, latent, s.seed, s.count, s.truncation)
    record = {"method": "nada", **asdict(s), **start.meta}
    history, cancelled, seconds = [], False, 0.0
    if network is not None:
        adapted, meta = adapted_generator(g, network, s.generator)
        art = as_artifact(network, NADA_KIND)
        record.update({"mode": "apply", "network_sha256": art.sha256(), "network_source": meta.get("source"),
                       "network_target": meta.get("target")})
    else:
        adapted, record_facts, history, cancelled, seconds = adapt(g, clip, s, callback, cancel, progress, start)
        record.update({"mode": "adapt", "clip": clip.name, **record_facts})
        art = nada_artifact(adapted, g, {"generator": s.generator, "generator_sha256": generator_sha256(s.generator),
                                         "source": s.source, "target": s.target, "clip": clip.name,
                                         **record_facts})
    t1 = time.perf_counter()
    original, twin = render(g, start), render(adapted, start)
    images = torch.stack([original, twin], dim=1).flatten(0, 1)
    t_apply = time.perf_counter() - t1
    if network is not None and callback is not None:
        callback(StepInfo(1, 1, {}, images))
    latents = Artifact(LATENT_KIND, start.artifact_tensors(start.wplus),
                       {"generator": s.generator, **start.artifact_meta()})
    result = RunResult.from_loop(images.cpu(), record, history, seconds, cancelled, t_load,
                                 extras={"layout": "pairs: original, adapted"},
                                 artifacts={"network": art, "latent": latents})
    result.timings["apply_s"] = t_apply
    return result


def adapt(g: Generator, clip: ClipModel, s: NadaSettings, callback: StepCallback | None = None,
          cancel: CancelToken | None = None, progress: bool = True, preview: Start | None = None,
          ) -> tuple[Generator, dict, list[dict[str, float]], bool, float]:
    """The training loop: (adapted copy, facts for the record, history, cancelled, seconds). ``g`` is not
    touched: the trainable copy is a deep copy, and the frozen images come from ``g`` without gradients."""
    base = g
    g = fast_copy(base)  # training runs on the unfused convolutions (faster on CPU), frozen side included
    trainable = copy.deepcopy(g).train().requires_grad_(False)
    modules = conv_modules(trainable)
    rng = torch.Generator().manual_seed(s.seed)
    templates = TEMPLATE_SETS[s.templates]
    guide = Guide(clip, [DirectionalTerm(source_text=s.source, target_text=s.target, templates=templates)],
                  generator=rng)
    picker = Guide(clip, [CosinePromptTerm(prompts=s.target, templates=TEMPLATE_SETS["plain"])], generator=rng)
    opt = torch.optim.Adam(list(trainable.parameters()), lr=s.lr * REG_RATIO,
                           betas=(0.0, 0.99 ** REG_RATIO))
    counts = {name: 0 for name, _ in modules}
    adaptive = s.layer_iters > 0 and s.layers_k < len(modules)

    def step(_: int) -> dict[str, float]:
        if adaptive:
            z = torch.randn(s.layer_batch, g.style_dim, generator=rng).to(g.device)
            with torch.no_grad():
                w = g.w_to_wplus(g.mapping(z))
            chosen = pick_layers(trainable, picker, w, s, rng)
        else:
            chosen = list(range(len(modules)))
        trainable.requires_grad_(False)
        for i in chosen:
            modules[i][1].requires_grad_(True)
            counts[modules[i][0]] += 1
        z = torch.randn(s.batch, g.style_dim, generator=rng).to(g.device)
        noise = g.make_noise(s.batch, "random", rng)
        with torch.no_grad():
            w = g.w_to_wplus(g.mapping(z))
            frozen = to_unit(g.synthesis(w, noise=noise))
        images = to_unit(trainable.synthesis(w, noise=noise))
        if (images.detach() - frozen).abs().max() > EQUAL:
            out = guide(images, source_images=frozen)
            loss, values = out.loss, out.values
        else:  # the copies still draw the same images: 1 - cos(0, Δt) is 0/0, use its first-order form
            loss = first_order_directional(clip, guide.terms[0], images, frozen)
            values = {"directional": 1.0, "loss": float(loss.detach())}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {**values, "layers": float(len(chosen))}

    def show() -> torch.Tensor:
        return render(trainable, preview)

    history, cancelled, seconds = run_steps(s.steps, step, callback, cancel, show if preview is not None else None,
                                            preview_every=25, progress=progress, desc="nada")
    trainable.eval().requires_grad_(False).set_fused_modconv(base.conv1.conv.fused)
    trained = [name for name, n in counts.items() if n > 0]
    return trainable, {"trained_layers": trained, "layer_counts": counts}, history, cancelled, seconds
