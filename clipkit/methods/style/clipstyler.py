"""CLIPstyler (Kwon & Ye, CVPR 2022): optimise a small U-Net per prompt on one content image.

Loss = lambda_patch * patch-wise directional loss (64 random 128 px crops, perspective-warped, patches whose
loss is already under the threshold 0.7 rejected) + lambda_dir * global directional loss ("a photo" -> prompt,
ImageNet template ensembles, source = the whole content image) + lambda_c * content loss + lambda_tv * TV.
Defaults are the paper's: 9000 / 500 / 150 / 2e-3, Adam lr 5e-4 halved every 100 steps, 200 steps, 512 px.
The content loss uses VGG19 in the paper; it is used when torchvision's VGG19 weights are on the machine, and
otherwise (as everywhere here: no VGG weights exist) CLIP's early layers stand in; the result says which
(``content_features``). The optimised network is kept: save it (safetensors) and re-apply it to
any image at any size in one forward pass (`apply_network`, "fast" mode).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.augment import PatchCrops
from clipkit.guidance.clip import DEFAULT_MODEL, ClipModel, get_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.features import content_loss, content_network
from clipkit.guidance.guide import DirectionalTerm, Guide, PatchDirectionalTerm, Term
from clipkit.guidance.images import as_tensor
from clipkit.guidance.prompts import TEMPLATE_SETS, parse_prompts
from clipkit.guidance.runs import (
    CancelToken,
    RunResult,
    StepCallback,
    check_steps,
    resolve_settings,
    run_steps,
    seeded_init,
    timed,
)
from clipkit.methods.style.network import StyleUNet, load_network, network_artifact, network_from_artifact

NETWORK_KIND = "clipstyler-unet"


@dataclass
class ClipStylerSettings:
    """Every knob of a CLIPstyler run; a preset for method 'clipstyler' holds exactly these keys."""

    prompt: str = "oil painting of flowers"
    source: str = "a photo"
    steps: int = 200
    size: int = 512
    seed: int = 0
    lr: float = 5e-4
    lr_decay_every: int = 100
    lr_decay: float = 0.5
    crop_size: int = 128
    num_crops: int = 64
    distortion: float = 0.5
    threshold: float = 0.7
    lambda_patch: float = 9000.0
    lambda_dir: float = 500.0
    lambda_c: float = 150.0
    lambda_tv: float = 2e-3
    ngf: int = 16
    templates: str = "imagenet"
    content_net: str = "auto"  # "auto": VGG19 (the paper's) when its weights are here, else CLIP's early layers
    content_weights: str | None = None
    model: str = DEFAULT_MODEL
    pretrained: str | None = None

    def validate(self) -> ClipStylerSettings:
        parse_prompts(self.prompt)
        parse_prompts(self.source)
        check_steps(self.steps)
        if not 32 <= self.size <= 2048:
            raise ParameterError(f"size={self.size} must be in 32..2048 (the content's long side, pixels)")
        if not 0 < self.lr <= 1:
            raise ParameterError(f"lr={self.lr} must be in (0, 1]")
        if not 1 <= self.lr_decay_every <= 100_000 or not 0 < self.lr_decay <= 1:
            raise ParameterError("lr_decay_every must be >= 1 and lr_decay in (0, 1]")
        if not 8 <= self.crop_size <= 2048:
            raise ParameterError(f"crop_size={self.crop_size} must be in 8..2048")
        if not 0 <= self.threshold <= 2:
            raise ParameterError(f"threshold={self.threshold} must be in [0, 2] (1 - cos ranges over [0, 2])")
        for name in ("lambda_patch", "lambda_dir", "lambda_c", "lambda_tv"):
            if not 0 <= getattr(self, name) <= 1e6:
                raise ParameterError(f"{name}={getattr(self, name)} must be in [0, 1e6]")
        if not 4 <= self.ngf <= 128:
            raise ParameterError(f"ngf={self.ngf} must be in 4..128")
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"templates='{self.templates}' must be one of {sorted(TEMPLATE_SETS)}")
        if self.content_net not in ("auto", "vgg19", "clip"):
            raise ParameterError(f"content_net='{self.content_net}' must be 'auto', 'vgg19' or 'clip'")
        PatchCrops(self.num_crops, self.crop_size, self.distortion)
        return self


def image_prior_tv(images: torch.Tensor) -> torch.Tensor:
    """CLIPstyler's TV: L2 norms of horizontal, vertical and both diagonal differences, summed.

    A norm, not a mean, so the paper's lambda_tv = 2e-3 keeps its meaning (it scales with image size).
    """
    d1 = images[..., :, :-1] - images[..., :, 1:]
    d2 = images[..., :-1, :] - images[..., 1:, :]
    d3 = images[..., 1:, :-1] - images[..., :-1, 1:]
    d4 = images[..., :-1, :-1] - images[..., 1:, 1:]
    return d1.norm() + d2.norm() + d3.norm() + d4.norm()


@dataclass(eq=False)
class ContentTerm(Term):
    """Content loss against fixed reference features (CLIP early layers at native resolution)."""

    features: Any = None
    reference: list[torch.Tensor] | None = None
    name: str = "content"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        return content_loss(self.features(images), self.reference, self.features.relative)


@dataclass(eq=False)
class ImagePriorTVTerm(Term):
    name: str = "tv"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        return image_prior_tv(images)


def resize_long_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Scale so the long side is `size` (CLIPstyler trains at 512), keeping the aspect ratio."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    if scale == 1:
        return image
    hw = (max(8, round(h * scale)), max(8, round(w * scale)))
    return F.interpolate(image, size=hw, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def build_guide(s: ClipStylerSettings, clip: ClipModel, content: torch.Tensor, generator: torch.Generator) -> Guide:
    """The paper's four terms over one batched CLIP pass (patches + whole image)."""
    templates = TEMPLATE_SETS[s.templates]
    features = content_network(clip, s.content_net, s.content_weights)
    with torch.no_grad():
        reference = [f.detach() for f in features(content)]
    return Guide(
        clip,
        [
            PatchDirectionalTerm(weight=s.lambda_patch, source_text=s.source, target_text=s.prompt,
                                 templates=templates, source_image=content, threshold=s.threshold,
                                 view=PatchCrops(s.num_crops, s.crop_size, s.distortion)),
            DirectionalTerm(weight=s.lambda_dir, source_text=s.source, target_text=s.prompt, templates=templates,
                            source_image=content, name="dir"),
            ContentTerm(weight=s.lambda_c, features=features, reference=reference),
            ImagePriorTVTerm(weight=s.lambda_tv),
        ],
        generator=generator,
    )


def clipstyler(
    image: Image.Image | torch.Tensor,
    settings: ClipStylerSettings | None = None,
    clip: ClipModel | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = True,
    save_to: str | Path | None = None,
    network: Artifact | None = None,
    **overrides: Any,
) -> RunResult:
    """Optimise a style network for the prompt on `image`; the result holds the image and the network.

    The trained `StyleUNet` is `result.artifacts["network"]` (and `result.extras["network"]`, the module);
    `save_to` also writes it. Given a trained `network` artifact instead, the network is applied to `image` at
    `size` in one pass (CLIPstyler's fast mode: nothing is optimised).
    """
    s = resolve_settings(ClipStylerSettings, settings, overrides)
    if network is not None:
        return _apply_artifact(network, image, s)
    clip, t_load = timed(lambda: clip or get_clip(s.model, s.pretrained))
    image = resize_long_side(as_tensor(image, clip.device)[:1], s.size)
    gen = torch.Generator().manual_seed(s.seed)
    with seeded_init(s.seed):
        net = StyleUNet(s.ngf).to(clip.device)
    guide = build_guide(s, clip, image, gen)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.lr_decay_every, gamma=s.lr_decay)

    def step(_: int) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        out = guide(net(image))
        out.loss.backward()
        opt.step()
        sched.step()
        return out.values

    def preview() -> torch.Tensor:
        with torch.no_grad():
            return net(image)

    history, cancelled, seconds = run_steps(s.steps, step, callback, cancel, preview, progress=progress,
                                            desc="clipstyler")
    net.eval()
    with torch.no_grad():
        final = net(image).clamp(0, 1)
    content = guide.terms[2].features
    record = {"method": "clipstyler", **asdict(s), "clip": clip.name, "content_features": content.name,
              "content_layers": list(content.layers)}
    artifact = network_artifact(net, NETWORK_KIND, record)
    result = RunResult.from_loop(final, record, history, seconds, cancelled, t_load, extras={"network": net},
                                 artifacts={"network": artifact})
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        result.extras["network_path"] = str(artifact.save(save_to))
    return result


def _apply_artifact(artifact: Artifact, image: Image.Image | torch.Tensor, s: ClipStylerSettings) -> RunResult:
    """Fast mode from a trained network artifact; the record keeps the settings and names the network."""
    net, trained = network_from_artifact(artifact, NETWORK_KIND)
    x = resize_long_side(as_tensor(image)[:1], s.size)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = net(x).clamp(0, 1)
    record = {"method": "clipstyler", **asdict(s), "mode": "apply", "network_sha256": artifact.sha256(),
              "network_prompt": trained.get("prompt"), "clip": trained.get("clip")}
    return RunResult(out, record, [], {"apply_s": time.perf_counter() - t0})


def apply_network(
    network: StyleUNet | str | Path,
    content: Image.Image | torch.Tensor,
    size: int | None = None,
    progress: bool = False,
) -> RunResult:
    """Fast mode: re-apply a trained CLIPstyler network to any image, at its own size or long side `size`."""
    meta: dict[str, Any] = {}
    if not isinstance(network, torch.nn.Module):
        path = str(network)
        network, meta = load_network(network, NETWORK_KIND)
        meta = {**meta, "network_path": path}
    device = next(network.parameters()).device
    image = as_tensor(content, device)
    if size is not None:
        image = resize_long_side(image, size)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = network.eval()(image).clamp(0, 1)
    settings = {"method": "clipstyler", "mode": "fast", "size": size,
                **{k: meta[k] for k in ("prompt", "clip", "content_features", "network_path") if k in meta}}
    return RunResult(out, settings, [], {"apply_s": time.perf_counter() - t0})
