"""CLIP's image tower cut in two: early feature maps (content loss, PODA's low-level features) and the rest.

CLIPstyler measures content with VGG19 conv4_2/conv5_2; that is used when its weights are on the machine
(`content_network`). No VGG weights exist on these machines, so the fallback content network is the CLIP image
tower's own first stages, run at the image's native resolution (convolutions and, for ViTs, interpolated
position embeddings), which keeps the spatial detail a 224 px (or 64 px) resize would lose.
PODA splits a ResNet CLIP after ``layer1``: PIN restyles that map and the remaining layers embed it.
Both ResNet (ModifiedResNet) and ViT towers of open_clip are supported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import CheckpointError, ParameterError, WeightsNotFoundError

CONTENT_FEATURES = "clip-early-layers"
VGG_FEATURES = "vgg19-conv4_2-conv5_2"
VGG_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19, as CLIPstyler uses


def tower_kind(clip: ClipModel) -> str:
    """'resnet' for open_clip's ModifiedResNet, 'vit' for VisionTransformer; anything else is refused."""
    visual = clip.model.visual
    if hasattr(visual, "layer1") and hasattr(visual, "attnpool"):
        return "resnet"
    if hasattr(visual, "conv1") and hasattr(visual, "transformer") and hasattr(visual, "positional_embedding"):
        return "vit"
    raise ParameterError(f"unsupported CLIP image tower {type(visual).__name__}: need an open_clip ResNet or ViT")


def _normalise(clip: ClipModel, images: torch.Tensor) -> torch.Tensor:
    return (images.to(clip.device) - clip.mean) / clip.std


def _resnet_stem(visual, x: torch.Tensor) -> torch.Tensor:
    x = visual.act1(visual.bn1(visual.conv1(x)))
    x = visual.act2(visual.bn2(visual.conv2(x)))
    x = visual.act3(visual.bn3(visual.conv3(x)))
    return visual.avgpool(x)


def _vit_tokens(visual, grid: torch.Tensor) -> torch.Tensor:
    """Patch grid (B, C, gh, gw) -> tokens with class token and position embeddings resized to the grid."""
    b, c, gh, gw = grid.shape
    x = grid.flatten(2).transpose(1, 2)
    pos = visual.positional_embedding.to(x.dtype)
    cls_pos, grid_pos = pos[:1], pos[1:]
    g = int(math.isqrt(grid_pos.shape[0]))
    if (gh, gw) != (g, g):
        grid_pos = grid_pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(gh * gw, c)
    cls = (visual.class_embedding.to(x.dtype) + cls_pos[0]).expand(b, 1, c)
    return visual.ln_pre(torch.cat([cls, x + grid_pos], dim=1))


def _run_blocks(transformer, x: torch.Tensor, blocks) -> torch.Tensor:
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for blk in blocks:
        x = blk(x)
    return x if transformer.batch_first else x.transpose(0, 1)


def find_vgg_weights(path: str | os.PathLike | None = None) -> Path | None:
    """A local VGG19 checkpoint: the given file, else torchvision's cache (torch hub dir); never downloads."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"VGG19 weights file not found: {p}")
        return p
    p = Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILE
    return p if p.is_file() else None


class Vgg19ContentFeatures:
    """CLIPstyler's own content network: VGG19 conv4_2 and conv5_2 (pre-ReLU), ImageNet normalisation.

    Only built when its weights are on this machine; the loss on these features is the paper's plain MSE.
    """

    relative = False
    name = VGG_FEATURES
    layers = ["conv4_2", "conv5_2"]
    _TAKE = (21, 30)

    def __init__(self, weights: str | os.PathLike, device: torch.device | str = "cpu") -> None:
        from torchvision.models import vgg19

        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        net = vgg19(weights=None).features[: self._TAKE[-1] + 1]
        try:
            net.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) <= self._TAKE[-1]})
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{weights} is not a torchvision VGG19 checkpoint: {e}") from e
        self.net = net.to(device).eval().requires_grad_(False)
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        feats = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self._TAKE:
                feats.append(x)
        return feats


@dataclass(eq=False)
class ClipEarlyFeatures:
    """Content features from CLIP's first stages at native resolution (ResNet: layer1, layer2; ViT: blocks 1-2).

    Why two depths: like conv4_2 + conv5_2, one keeps edges, the deeper one keeps layout under texture change.
    """

    clip: ClipModel
    depth: int = 2
    relative = True
    name = CONTENT_FEATURES

    def __post_init__(self) -> None:
        self.kind = tower_kind(self.clip)
        if self.kind == "vit":
            self.depth = min(self.depth, len(self.clip.model.visual.transformer.resblocks))

    @property
    def layers(self) -> list[str]:
        return [f"layer{i + 1}" for i in range(self.depth)] if self.kind == "resnet" else [
            f"block{i + 1}" for i in range(self.depth)
        ]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        visual = self.clip.model.visual
        x = _normalise(self.clip, images)
        feats: list[torch.Tensor] = []
        if self.kind == "resnet":
            x = _resnet_stem(visual, x)
            for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)[: self.depth]:
                x = layer(x)
                feats.append(x)
            return feats
        p = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % p, 0, (-h) % p), mode="replicate")
        tokens = _vit_tokens(visual, visual.conv1(x))
        for blk in visual.transformer.resblocks[: self.depth]:
            tokens = _run_blocks(visual.transformer, tokens, [blk])
            feats.append(tokens[:, 1:])
        return feats


def content_loss(features: list[torch.Tensor], reference: list[torch.Tensor], relative: bool = True) -> torch.Tensor:
    """Mean squared feature difference per layer, summed over layers (the paper's loss with `relative=False`).

    For CLIP features it is relative to the reference's mean square: CLIPs' feature scales differ by orders of
    magnitude, and the paper's weight (150) was set for VGG's scale.
    """
    total = features[0].new_zeros(())
    for f, r in zip(features, reference):
        err = (f - r).pow(2).mean()
        total = total + (err / r.pow(2).mean().clamp_min(1e-8) if relative else err)
    return total


def content_network(clip: ClipModel, choice: str = "auto", weights: str | os.PathLike | None = None):
    """VGG19 when asked or when its weights are here ('auto'), otherwise CLIP's early layers."""
    if choice not in ("auto", "vgg19", "clip"):
        raise ParameterError(f"content_net='{choice}' must be 'auto', 'vgg19' or 'clip'")
    if choice == "clip":
        return ClipEarlyFeatures(clip)
    found = find_vgg_weights(weights)
    if found is not None:
        return Vgg19ContentFeatures(found, clip.device)
    if choice == "vgg19":
        raise WeightsNotFoundError(
            f"content_net='vgg19' needs torchvision's VGG19 weights ({VGG_FILE}) in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} or content_weights=PATH; no hub is reachable here")
    return ClipEarlyFeatures(clip)


@dataclass(eq=False)
class ClipSplit:
    """The image tower as ``embed(low(x))``: PODA optimises statistics of ``low(x)`` and backprops through ``rest``.

    ResNet: low = stem + layer1 (post-ReLU, as in PODA); ViT: low = the patch-embedding grid (before the class
    token and position embeddings). Images are resized to the CLIP input size first, as CLIP saw in training.
    """

    clip: ClipModel

    def __post_init__(self) -> None:
        self.kind = tower_kind(self.clip)

    @property
    def post_relu(self) -> bool:
        """ResNet layer1 ends in a ReLU, so restyled features are clamped at 0 like PODA's PIN."""
        return self.kind == "resnet"

    @property
    def layer(self) -> str:
        return "layer1" if self.kind == "resnet" else "patch_embed"

    def low(self, images: torch.Tensor, native: bool = False) -> torch.Tensor:
        """Low-level feature map (B, C, h, w); `native` keeps the image's own size (for previews)."""
        visual = self.clip.model.visual
        x = _normalise(self.clip, images) if native else self.clip.preprocess(images.to(self.clip.device))
        if self.kind == "resnet":
            return visual.layer1(_resnet_stem(visual, x))
        return visual.conv1(x)

    def rest(self, features: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, D) from a low-level feature map at the CLIP input size."""
        visual = self.clip.model.visual
        if self.kind == "resnet":
            x = visual.layer4(visual.layer3(visual.layer2(features)))
            out = visual.attnpool(x)
        else:
            tokens = _run_blocks(visual.transformer, _vit_tokens(visual, features), visual.transformer.resblocks)
            out, _ = visual._pool(tokens)
            if visual.proj is not None:
                out = out @ visual.proj
        return F.normalize(out.float(), dim=-1)
