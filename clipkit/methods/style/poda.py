"""PODA (Fahes et al., ICCV 2023): prompt-driven instance normalisation (PIN) of CLIP's low-level features.

PIN keeps a feature map's normalised content and replaces its per-channel statistics with learnt (mu, sigma):
``PIN(f) = sigma * (f - mean(f)) / std(f) + mu`` (then ReLU for post-ReLU ResNet maps). (mu, sigma) start at the
map's own statistics and are optimised so that the restyled map, sent through the rest of the CLIP image tower,
lands near the target-domain prompt (cosine distance). The paper does this on RN50's ``layer1`` with SGD (lr 1,
momentum 0.9, weight decay 1e-4, 100 iterations) to augment source-domain features for zero-shot adaptation of a
downstream model sharing that backbone: `pin_statistics` + `apply_pin` are that feature-level API. `poda` adds a
visual preview: the image is re-rendered (feature inversion from the photo) so its early features carry the
learnt statistics.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.features import ClipSplit
from clipkit.guidance.images import as_tensor
from clipkit.guidance.prompts import encode_prompt, parse_prompts
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, check_steps, resolve_settings, run_steps, timed
from clipkit.methods.style.clipstyler import TEMPLATE_SETS, image_prior_tv, resize_long_side


def channel_stats(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std (B, C, 1, 1) over the spatial dimensions."""
    flat = features.flatten(2)
    mean = flat.mean(-1)[..., None, None]
    std = (flat.var(-1, unbiased=False) + eps).sqrt()[..., None, None]
    return mean, std


def apply_pin(
    features: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, relu: bool = True
) -> torch.Tensor:
    """Give `features` (B, C, H, W) the channel statistics (mu, sigma) (B or 1, C, 1, 1): AdaIN with learnt stats."""
    mean, std = channel_stats(features)
    out = (features - mean) / std * sigma + mu
    return out.clamp_min(0) if relu else out


@dataclass
class PinResult:
    """Learnt target-domain statistics per image plus the optimisation record."""

    mu: torch.Tensor
    sigma: torch.Tensor
    source_mu: torch.Tensor
    source_sigma: torch.Tensor
    history: list[dict[str, float]]
    layer: str
    relu: bool
    cancelled: bool = False


def pin_statistics(
    clip: ClipModel,
    images: torch.Tensor,
    prompt: str | torch.Tensor,
    steps: int = 100,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    templates: str = "imagenet",
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
) -> PinResult:
    """Optimise PIN statistics of each image's low-level CLIP features toward `prompt` (PODA's Algorithm 1).

    `prompt` may also be a target embedding (D,) — e.g. of a reference image — for image-driven PIN.
    """
    check_steps(steps)
    split = ClipSplit(clip)
    target = target_embedding(clip, prompt, templates)
    with torch.no_grad():
        feats = split.low(images).detach()
    mean0, std0 = channel_stats(feats)
    normed = (feats - mean0) / std0
    mu = torch.nn.Parameter(mean0.clone())
    sigma = torch.nn.Parameter(std0.clone())
    opt = torch.optim.SGD([mu, sigma], lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step(_: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            sigma.clamp_(min=0)
        styled = normed * sigma + mu
        if split.post_relu:
            styled = styled.clamp_min(0)
        emb = split.rest(styled)
        loss = (1 - torch.cosine_similarity(emb, target.expand_as(emb), dim=-1)).mean()
        loss.backward()
        opt.step()
        return {"pin": float(loss.detach()), "loss": float(loss.detach())}

    history, cancelled, _ = run_steps(steps, step, callback, cancel, progress=progress, desc="pin")
    with torch.no_grad():
        sigma.clamp_(min=0)
    return PinResult(mu.detach(), sigma.detach(), mean0, std0, history, split.layer, split.post_relu, cancelled)


def target_embedding(clip: ClipModel, prompt: str | torch.Tensor, templates: str = "imagenet") -> torch.Tensor:
    """Unit target (D,): the prompt's template-ensembled text embedding, or a given embedding normalised."""
    if isinstance(prompt, torch.Tensor):
        return torch.nn.functional.normalize(prompt.detach().float().reshape(-1), dim=0).to(clip.device)
    return encode_prompt(clip, prompt, TEMPLATE_SETS[templates]).to(clip.device)


def pin_loss(
    clip: ClipModel, features: torch.Tensor, prompt: str | torch.Tensor, templates: str = "imagenet"
) -> torch.Tensor:
    """PODA's objective for given low-level features: mean 1 - cos(rest(features), prompt)."""
    split = ClipSplit(clip)
    target = target_embedding(clip, prompt, templates)
    emb = split.rest(features)
    return (1 - torch.cosine_similarity(emb, target.expand_as(emb), dim=-1)).mean()


class PinAugmenter:
    """Feature-level augmentation for zero-shot domain adaptation (PODA's use).

    Holds banks of learnt target statistics per prompt; `__call__` restyles a batch of source features by
    drawing one (mu, sigma) pair per sample from a prompt's bank with a torch.Generator. A downstream head
    trained on augmented features (with the CLIP backbone frozen up to `layer`) then generalises to the domain.
    """

    def __init__(self, clip: ClipModel, relu: bool | None = None) -> None:
        self.clip = clip
        self.split = ClipSplit(clip)
        self.relu = self.split.post_relu if relu is None else relu
        self.banks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The low-level features PIN acts on (what a downstream model built on this backbone would see)."""
        return self.split.low(images)

    def learn(self, prompt: str, images: torch.Tensor, **kwargs: Any) -> PinResult:
        """Learn statistics for `prompt` from source images and add them to the prompt's bank."""
        res = pin_statistics(self.clip, images, prompt, **kwargs)
        old = self.banks.get(prompt)
        if old is not None:
            self.banks[prompt] = (torch.cat([old[0], res.mu]), torch.cat([old[1], res.sigma]))
        else:
            self.banks[prompt] = (res.mu, res.sigma)
        return res

    def __call__(
        self, features: torch.Tensor, prompt: str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not self.banks:
            raise ParameterError("no statistics learnt yet: call learn(prompt, images) first")
        prompts = sorted(self.banks)
        if prompt is None:
            prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
        if prompt not in self.banks:
            raise ParameterError(f"no statistics for prompt '{prompt}'; learnt: {prompts}")
        mu, sigma = self.banks[prompt]
        idx = torch.randint(mu.shape[0], (features.shape[0],), generator=generator)
        return apply_pin(features, mu[idx].to(features), sigma[idx].to(features), self.relu)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors: '<i>.mu', '<i>.sigma'; prompts go in the file's metadata."""
        out = {}
        for i, p in enumerate(sorted(self.banks)):
            out[f"{i}.mu"], out[f"{i}.sigma"] = (t.contiguous().cpu() for t in self.banks[p])
        return out

    def save(self, path: str) -> None:
        import json

        from clipkit.guidance.runs import save_safetensors

        save_safetensors(self.state_dict(), path, {"prompts": json.dumps(sorted(self.banks)),
                                                "clip": self.clip.name, "layer": self.split.layer})

    def load(self, path: str) -> PinAugmenter:
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            prompts = json.loads(f.metadata()["prompts"])
        tensors = load_file(path)
        for i, p in enumerate(prompts):
            self.banks[p] = (tensors[f"{i}.mu"], tensors[f"{i}.sigma"])
        return self


@dataclass
class PodaSettings:
    """Every knob of a PODA run; a preset for method 'poda' holds exactly these keys."""

    prompt: str = "driving at night"
    steps: int = 100
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    templates: str = "imagenet"
    size: int = 512
    preview_steps: int = 100
    preview_lr: float = 0.05
    preview_tv: float = 0.1  # feature inversion leaves speckle below layer1's 1/4 resolution; TV removes it
    seed: int = 0  # recorded only: PIN and the preview are deterministic
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> PodaSettings:
        parse_prompts(self.prompt)
        check_steps(self.steps)
        if self.preview_steps != 0:
            check_steps(self.preview_steps)
        if not 0 < self.lr <= 100 or not 0 <= self.momentum < 1 or not 0 <= self.weight_decay <= 1:
            raise ParameterError("lr must be in (0, 100], momentum in [0, 1), weight_decay in [0, 1]")
        if not 0 < self.preview_lr <= 1 or not 0 <= self.preview_tv <= 1:
            raise ParameterError("preview_lr must be in (0, 1], preview_tv in [0, 1]")
        if not 32 <= self.size <= 2048:
            raise ParameterError(f"size={self.size} must be in 32..2048")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        return self


def render_preview(
    split: ClipSplit, image: torch.Tensor, pin: PinResult, steps: int, lr: float, tv: float,
    progress: bool = False, cancel: CancelToken | None = None,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Invert the restyled features back to pixels: start from the photo, match its PIN-ed early features.

    Statistics are per channel, so the ones learnt at CLIP's input size transfer to the image's native size.
    """
    with torch.no_grad():
        target = apply_pin(split.low(image, native=True), pin.mu, pin.sigma, pin.relu).detach()
        scale = target.pow(2).mean().clamp_min(1e-8)
    logit = torch.nn.Parameter(torch.logit(image.clamp(1e-3, 1 - 1e-3)).clone())
    opt = torch.optim.Adam([logit], lr=lr)
    n_pix = image[0, 0].numel()

    def step(_: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        x = torch.sigmoid(logit)
        feat = (split.low(x, native=True) - target).pow(2).mean() / scale
        reg = image_prior_tv(x) / n_pix**0.5
        loss = feat + tv * reg
        loss.backward()
        opt.step()
        return {"feature": float(feat.detach()), "loss": float(loss.detach())}

    history, _, _ = run_steps(steps, step, cancel=cancel, progress=progress, desc="poda preview")
    return torch.sigmoid(logit).detach(), history


def poda(
    image: Image.Image | torch.Tensor,
    settings: PodaSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunResult:
    """PIN toward the prompt, then (preview_steps > 0) a visual preview; statistics travel in `extras`."""
    s = resolve_settings(PodaSettings, settings, overrides)
    clip, t_load = timed(lambda: clip or get_clip(s.model, s.pretrained))
    image = resize_long_side(as_tensor(image, clip.device), s.size)
    t1 = time.perf_counter()
    pin = pin_statistics(clip, image, s.prompt, s.steps, s.lr, s.momentum, s.weight_decay, s.templates,
                         callback, cancel, progress)
    t_pin = time.perf_counter() - t1
    split = ClipSplit(clip)
    out, preview_hist = image, []
    if s.preview_steps and not pin.cancelled:
        out, preview_hist = render_preview(split, image, pin, s.preview_steps, s.preview_lr, s.preview_tv,
                                           progress, cancel)
    t_prev = time.perf_counter() - t1 - t_pin
    record = {"method": "poda", **asdict(s), "clip": clip.name, "layer": pin.layer,
              "pin_loss_start": pin.history[0]["pin"] if pin.history else None,
              "pin_loss_end": pin.history[-1]["pin"] if pin.history else None}
    history = [dict(h) for h in pin.history] + [{f"preview_{k}": v for k, v in h.items()} for h in preview_hist]
    stats = Artifact("statistics/pin", {"mu": pin.mu, "sigma": pin.sigma, "source_mu": pin.source_mu,
                                         "source_sigma": pin.source_sigma},
                     {"prompt": s.prompt, "clip": clip.name, "layer": pin.layer, "relu": pin.relu})
    return RunResult(out.clamp(0, 1), record, history,
                     {"load_s": t_load, "pin_s": t_pin, "preview_s": t_prev}, pin.cancelled,
                     extras={"pin": pin}, artifacts={"statistics": stats})
