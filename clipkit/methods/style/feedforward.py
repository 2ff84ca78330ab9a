"""Feed-forward text-conditioned style transfer in the spirit of CLAST: train once, then any prompt in one pass.

`TextStylizer` is trained over many (content crop, style prompt) pairs with CLIPstyler's own losses — patch-wise
directional with threshold rejection, global directional, CLIP-early-layer content loss, TV — so no per-prompt
optimisation is needed at inference: `stylize` embeds the prompt with the CLIP the network was trained with and
runs one forward pass. `train_stylizer` writes the network (safetensors) plus a training-state file (optimizer
moments, data RNG, step) every `checkpoint_every` steps; `resume=True` continues from them exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from clipkit.guidance import losses, weights
from clipkit.guidance.augment import PatchCrops
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import CheckpointError, ParameterError, WeightsNotFoundError
from clipkit.guidance.features import content_loss, content_network
from clipkit.guidance.images import as_tensor, load_image
from clipkit.guidance.prompts import encode_prompt, parse_prompts
from clipkit.guidance.runs import (
    CancelToken,
    RunResult,
    StepCallback,
    check_steps,
    load_optimizer,
    optimizer_tensors,
    resolve_settings,
    save_safetensors,
    seeded_init,
)
from clipkit.guidance.training import fit
from clipkit.methods.style.clipstyler import TEMPLATE_SETS, image_prior_tv, resize_long_side
from clipkit.methods.style.network import TextStylizer, load_network, save_network

NETWORK_KIND = "text-stylizer"
DEFAULT_PROMPTS = (
    "oil painting of flowers", "a watercolor painting", "pop art", "a pencil sketch", "fire",
    "starry night by Vincent van Gogh", "the scream by Edvard Munch", "a mosaic of colored glass",
    "neon lights", "ukiyo-e woodblock print", "cubism by Pablo Picasso", "snowy winter",
)


@dataclass
class TrainStylizerSettings:
    """Knobs of a stylizer training run (recorded in every checkpoint; resume refuses a changed architecture)."""

    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    source: str = "a photo"
    steps: int = 300
    size: int = 192
    batch: int = 2
    lr: float = 5e-4
    seed: int = 0
    crop_size: int = 64
    num_crops: int = 16
    distortion: float = 0.5
    threshold: float = 0.7
    lambda_patch: float = 9000.0
    lambda_dir: float = 500.0
    lambda_c: float = 150.0
    lambda_tv: float = 2e-3
    ngf: int = 16  # 0.5M parameters: 0.37 s per 512x512 on one CPU core (ngf=32: 1.3 s), trains 3x faster
    cond_dim: int = 256
    n_res: int = 2
    templates: str = "imagenet"
    checkpoint_every: int = 50
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> TrainStylizerSettings:
        if isinstance(self.prompts, str):
            self.prompts = [p.strip() for p in self.prompts.split("|") if p.strip()]
        if not self.prompts:
            raise ParameterError("train_stylizer needs at least one style prompt")
        for p in self.prompts:
            parse_prompts(p)
        check_steps(self.steps)
        if not 32 <= self.size <= 1024 or not 1 <= self.batch <= 64:
            raise ParameterError(f"size={self.size} must be in 32..1024 and batch={self.batch} in 1..64")
        if not 0 < self.lr <= 1 or not 1 <= self.checkpoint_every <= 100_000:
            raise ParameterError("lr must be in (0, 1] and checkpoint_every >= 1")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        PatchCrops(self.num_crops, self.crop_size, self.distortion)
        return self

    def architecture(self) -> dict[str, int]:
        return {"ngf": self.ngf, "cond_dim": self.cond_dim, "n_res": self.n_res}


def text_condition(clip: ClipModel, prompts: Sequence[str], templates: str, source: str = "a photo") -> torch.Tensor:
    """What the decoder is modulated by: the unit text direction source -> prompt (template ensembles).

    The direction, not the raw embedding: CLIP text embeddings share a large common component (cos 0.8-0.99
    between unrelated prompts), while directions differ fully, and the losses are directional anyway.
    """
    src = encode_prompt(clip, source, TEMPLATE_SETS[templates])
    tgt = torch.stack([encode_prompt(clip, p, TEMPLATE_SETS[templates]) for p in prompts])
    return F.normalize(tgt - src, dim=-1)


def load_contents(
    images: Sequence[str | os.PathLike | Image.Image | torch.Tensor], long_side: int
) -> list[torch.Tensor]:
    """Training photos as (1, 3, h, w) tensors, long side `long_side` (random crops are cut from these)."""
    out = []
    for im in images:
        t = as_tensor(load_image(im)) if isinstance(im, (str, os.PathLike)) else as_tensor(im)
        out.append(resize_long_side(t[:1], long_side))
    if not out:
        raise ParameterError("train_stylizer needs at least one content image")
    return out


def sample_batch(contents: list[torch.Tensor], size: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Random square crops (60-100% of the short side) resized to `size`, randomly mirrored."""
    crops = []
    for _ in range(batch):
        img = contents[int(torch.randint(len(contents), (1,), generator=gen))]
        h, w = img.shape[-2:]
        side = int(min(h, w) * (0.6 + 0.4 * float(torch.rand(1, generator=gen))))
        y = int(torch.randint(h - side + 1, (1,), generator=gen))
        x = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = F.interpolate(img[..., y:y + side, x:x + side], size=(size, size), mode="bicubic",
                             align_corners=False, antialias=True)
        if float(torch.rand(1, generator=gen)) < 0.5:
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.cat(crops).clamp(0, 1)


def stylizer_losses(
    clip: ClipModel,
    features: Any,
    view: PatchCrops,
    content: torch.Tensor,
    output: torch.Tensor,
    source_text: torch.Tensor,
    target_text: torch.Tensor,
    s: TrainStylizerSettings,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CLIPstyler's loss with a prompt per sample; patches, outputs and sources share one CLIP pass."""
    b, size = output.shape[0], clip.image_size
    patches = view(output, size, gen)
    whole = F.interpolate(torch.cat([output, content]), size=(size, size), mode="bicubic", align_corners=False,
                          antialias=True)
    emb = clip.encode_image(torch.cat([patches, whole]))
    patch_emb, out_emb, src_emb = emb[: patches.shape[0]], emb[-2 * b: -b], emb[-b:].detach()
    patch, kept = losses.patch_directional_loss(src_emb[:, None], patch_emb.view(b, -1, emb.shape[-1]),
                                                source_text, target_text[:, None], s.threshold)
    direc = losses.directional_loss(src_emb, out_emb, source_text, target_text)
    with torch.no_grad():
        ref = [f.detach() for f in features(content)]
    cont = content_loss(features(output), ref, features.relative)
    tv = image_prior_tv(output) / b
    total = s.lambda_patch * patch + s.lambda_dir * direc + s.lambda_c * cont + s.lambda_tv * tv
    values = {"patch": float(patch.detach()), "dir": float(direc.detach()), "content": float(cont.detach()),
              "tv": float(tv.detach()),
              "patch_kept": float(kept.float().mean()), "loss": float(total.detach())}
    return total, values


def _state_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".safetensors") + ".train.safetensors")


def _save_state(out: Path, net: TextStylizer, opt: torch.optim.Optimizer, gen: torch.Generator,
                step: int, record: dict[str, Any]) -> None:
    """Network (loadable by `stylize`) + optimizer moments and data RNG (for exact resume), both atomic."""
    save_network(net, out, NETWORK_KIND, {**record, "step": step})
    tensors, groups = optimizer_tensors(opt, "opt")
    tensors["rng"] = gen.get_state()
    save_safetensors(tensors, _state_path(out), {"step": str(step), "record": json.dumps(record, default=str),
                                                 "opt_groups": groups})


def _load_state(out: Path, net: TextStylizer, opt: torch.optim.Optimizer, gen: torch.Generator,
                record: dict[str, Any]) -> int:
    """Restore everything `_save_state` wrote; returns the step to continue from."""
    path = _state_path(out)
    if not out.is_file() or not path.is_file():
        return 0
    saved, meta = load_network(out, NETWORK_KIND)
    header = safe_open(str(path), framework="pt").metadata()
    if "opt_groups" not in header:
        raise CheckpointError(f"cannot resume {out}: {path.name} is from an older format; start again with --no-resume")
    old = json.loads(header["record"])
    for key in ("ngf", "cond_dim", "n_res", "model", "pretrained", "templates", "size"):
        if old.get(key) != record.get(key):
            raise CheckpointError(f"cannot resume {out}: it was trained with {key}={old.get(key)!r}, "
                                  f"now {record.get(key)!r}; use another --out or the old setting")
    net.load_state_dict(saved.state_dict())
    tensors = load_file(str(path))
    gen.set_state(tensors.pop("rng"))
    load_optimizer(opt, tensors, "opt", header["opt_groups"])
    return int(header["step"])


def train_stylizer(
    contents: Sequence[str | os.PathLike | Image.Image | torch.Tensor],
    out: str | os.PathLike,
    settings: TrainStylizerSettings | None = None,
    clip: ClipModel | None = None,
    resume: bool = True,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train (or continue training) a TextStylizer; returns the last batch's outputs and the loss history."""
    s = resolve_settings(TrainStylizerSettings, settings, overrides)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ParameterError(f"the stylizer is saved as safetensors; use a .safetensors name, not {out.name}")
    clip = clip or get_clip(s.model, s.pretrained)
    features = content_network(clip)  # VGG19 when its weights are here, else CLIP's early layers
    record = {"method": "train-stylizer", **asdict(s), "clip": clip.name, "text_dim": clip.embed_dim,
              "content_features": features.name}
    data = load_contents(contents, int(s.size * 1.5))
    gen = torch.Generator().manual_seed(s.seed)
    with seeded_init(s.seed):
        net = TextStylizer(clip.embed_dim, **s.architecture()).to(clip.device)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    start = _load_state(out, net, opt, gen, record) if resume else 0
    if start >= s.steps:
        return RunResult(torch.empty(0, 3, s.size, s.size), {**record, "step": start}, [], {}, False,
                         extras={"network": net.eval(), "path": str(out), "start_step": start})
    src_text = encode_prompt(clip, s.source, TEMPLATE_SETS[s.templates])
    targets = torch.stack([encode_prompt(clip, p, TEMPLATE_SETS[s.templates]) for p in s.prompts])
    conds = text_condition(clip, s.prompts, s.templates, s.source)
    view = PatchCrops(s.num_crops, s.crop_size, s.distortion)
    net.train()
    last: dict[str, torch.Tensor] = {}

    class Run:  # the one training loop's view of this run (clipkit.guidance.training.fit)
        step = start

        def train_step(self) -> dict[str, float]:
            content = sample_batch(data, s.size, s.batch, gen).to(clip.device)
            idx = torch.randint(len(s.prompts), (s.batch,), generator=gen)
            opt.zero_grad(set_to_none=True)
            output = net(content, conds[idx], gen)
            loss, values = stylizer_losses(clip, features, view, content, output, src_text, targets[idx], s, gen)
            loss.backward()
            opt.step()
            last["images"] = output.detach()
            self.step += 1
            return values

        def save(self, folder: Path) -> Path:
            _save_state(out, net, opt, gen, self.step, record)
            return out

    run = Run()
    done = fit(run, s.steps, out.parent, every=s.checkpoint_every, callback=callback, cancel=cancel,
               progress=progress, desc="train stylizer", log=None)
    net.eval()
    history = done.history
    return RunResult(last.get("images", torch.empty(0, 3, s.size, s.size)), {**record, "step": run.step}, history,
                     {"train_s": done.seconds, "s_per_step": done.seconds / max(1, len(history))}, done.cancelled,
                     extras={"network": net, "path": str(out), "start_step": start})


# Trained here on the content photos with the world guide (see clipkit/methods/style/models/world-stylizer.md).
SHIPPED_STYLIZER = "world-stylizer"


@dataclass
class StylizeSettings:
    """Every knob of a feed-forward stylisation; a preset for method 'stylize' holds exactly these keys."""

    prompt: str = "a photo on a striped background"  # the shipped stylizer knows world prompts (world_prompts.txt)
    checkpoint: str = SHIPPED_STYLIZER
    seed: int = 0
    size: int | None = 512
    noise: bool = True
    strength: float = 1.0  # 0 = the input, 1 = the stylizer's picture (a blend in pixels; above 1 goes further)

    def validate(self) -> StylizeSettings:
        parse_prompts(self.prompt)
        if not 0 <= self.strength <= 2:
            raise ParameterError(f"strength={self.strength} must be in [0, 2]")
        if self.size is not None and not 32 <= self.size <= 4096:
            raise ParameterError(f"size={self.size} must be in 32..4096 or None (keep the input size)")
        return self


_NETWORKS: dict[tuple[str, float], tuple[TextStylizer, dict[str, Any]]] = {}
# the last stylised pictures by (network, prompt, seed, noise, input): a strength slider redraws from them
_STYLIZED: OrderedDict[tuple, tuple[TextStylizer, torch.Tensor]] = OrderedDict()
_STYLIZED_KEEP = 4
_STYLIZED_LOCK = threading.Lock()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A stylizer file as given, else a shipped one by name (``world-stylizer``; an old record's path to it works
    too); a missing one comes back as given, for the caller's message."""
    try:
        return weights.resolve("stylizer", path)
    except WeightsNotFoundError:
        return Path(path)


def get_stylizer(path: str | os.PathLike) -> tuple[TextStylizer, dict[str, Any]]:
    """Load a stylizer once per process (reloaded when the file changes)."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"stylizer checkpoint not found: {path}. Train one with "
                              "`clipkit train stylizer --content DIR --out PATH`")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _NETWORKS:
        _NETWORKS[key] = load_network(path, NETWORK_KIND)
    return _NETWORKS[key]


def stylize(
    image: Image.Image | torch.Tensor,
    settings: StylizeSettings | None = None,
    clip: ClipModel | None = None,
    network: TextStylizer | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
    **overrides: Any,
) -> RunResult:
    """Stylise `image` for any prompt in one forward pass; same prompt, seed and input give the same image."""
    s = resolve_settings(StylizeSettings, settings, overrides)
    meta: dict[str, Any] = {}
    if network is None:
        network, meta = get_stylizer(s.checkpoint)
    t0 = time.perf_counter()
    clip = clip or get_clip(meta.get("model", DEFAULT_MODEL), meta.get("pretrained"))
    text_dim = network.config["text_dim"]
    if clip.embed_dim != text_dim:
        raise CheckpointError(f"the stylizer was trained with a {text_dim}-d CLIP ({meta.get('clip')}); "
                              f"{clip.name} gives {clip.embed_dim}-d text embeddings")
    t_load = time.perf_counter() - t0
    device = next(network.parameters()).device
    image = as_tensor(image, device)
    if s.size is not None:
        image = resize_long_side(image, s.size)
    t1 = time.perf_counter()
    key = (id(network), s.prompt, s.seed, s.noise, tuple(image.shape),
           hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
    with _STYLIZED_LOCK:
        hit = _STYLIZED.get(key)
    out = hit[1] if hit is not None and hit[0] is network else None  # the same network, not a reused id
    if out is None:
        cond = text_condition(clip, [s.prompt], meta.get("templates", "imagenet"), meta.get("source", "a photo"))
        gen = torch.Generator().manual_seed(s.seed) if s.noise else None
        with torch.inference_mode():
            out = network.eval()(image, cond.to(device).expand(image.shape[0], -1), gen)
        with _STYLIZED_LOCK:
            _STYLIZED[key] = (network, out)
            while len(_STYLIZED) > _STYLIZED_KEEP:
                _STYLIZED.popitem(last=False)
    if s.strength != 1.0:
        out = torch.lerp(image, out, s.strength)
    t_run = time.perf_counter() - t1
    record = {"method": "stylize", **asdict(s), "clip": clip.name, "trained_steps": meta.get("step")}
    return RunResult(out.clamp(0, 1), record, [], {"load_s": t_load, "forward_s": t_run})
