"""The two style networks and their safetensors files.

`StyleUNet` is CLIPstyler's lightweight per-prompt network (ngf=16, three stride-2 stages, instance norm, 1x1
skip convolutions, sigmoid output): fully convolutional, so a network optimised on one 512 px photo re-applies to
any image at any size. `TextStylizer` is the feed-forward, text-conditioned encoder-decoder (CLAST-like): every
decoder block is instance-normalised and then scaled and shifted by an affine map of the CLIP text embedding
(adaptive instance norm), so one set of weights serves every prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from clipkit.guidance.artifacts import FORMAT as ARTIFACT_FORMAT
from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.errors import CheckpointError
from clipkit.guidance.limits import check_network_size, loads_json, max_params
from clipkit.guidance.runs import model_loading


def _conv_in_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1), nn.InstanceNorm2d(cout), nn.ReLU()]


class ResBlock(nn.Module):
    """Two 3x3 conv + IN + ReLU with a 1x1 projection skip: CLIPstyler's basic unit."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_in_relu(cin, cout), *_conv_in_relu(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = ResBlock(cin, cout)
        self.down = nn.Conv2d(cout, cout, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.block(x)
        return self.down(feat), feat


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = ResBlock(cin + cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class StyleUNet(nn.Module):
    """CLIPstyler's style network: content image (B, 3, H, W) in [0, 1] -> stylised image in [0, 1]."""

    def __init__(self, ngf: int = 16) -> None:
        super().__init__()
        self.ngf = ngf
        self.inp = nn.Conv2d(3, ngf, 1)
        self.init = ResBlock(ngf, ngf)
        self.down1, self.down2, self.down3 = Down(ngf, ngf), Down(ngf, 2 * ngf), Down(2 * ngf, 4 * ngf)
        self.mid = ResBlock(4 * ngf, 8 * ngf)
        self.up3, self.up2, self.up1 = Up(8 * ngf, 4 * ngf), Up(4 * ngf, 2 * ngf), Up(2 * ngf, ngf)
        self.out = ResBlock(2 * ngf, ngf)
        self.head = nn.Conv2d(ngf, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8  # any size: pad to the network's stride, crop back
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x0 = self.init(self.inp(x))
        d1, f1 = self.down1(x0)
        d2, f2 = self.down2(d1)
        d3, f3 = self.down3(d2)
        y = self.up1(self.up2(self.up3(self.mid(d3), f3), f2), f1)
        y = torch.sigmoid(self.head(self.out(torch.cat([y, x0], dim=1))))
        return y[..., :h, :w]


class TextModulation(nn.Module):
    """Adaptive instance norm driven by text: IN(x) * (1 + gamma(t)) + beta(t), zero-initialised (identity)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(cond)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class ModulatedBlock(nn.Module):
    """Decoder block: conv -> text-modulated IN -> ReLU, twice, plus seeded noise scaled by a learnt weight."""

    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.mod1, self.mod2 = TextModulation(cout, cond_dim), TextModulation(cout, cond_dim)
        self.skip = nn.Conv2d(cin, cout, 1)
        self.noise_weight = nn.Parameter(torch.full((1, cout, 1, 1), 0.05))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h = self.conv1(x)
        if generator is not None:
            noise = torch.randn(h.shape[0], 1, *h.shape[-2:], generator=generator).to(h)
            h = h + self.noise_weight * noise
        h = F.relu(self.mod1(h, cond))
        h = F.relu(self.mod2(self.conv2(h), cond))
        return h + self.skip(x)


class TextStylizer(nn.Module):
    """Feed-forward text-conditioned stylizer: (content (B,3,H,W), text embedding (B,D)) -> stylised image.

    The output is a residual in logit space around the content, with a zero-initialised head: training starts
    from the identity, so a few hundred CPU steps go into style rather than into relearning the photo.
    """

    def __init__(self, text_dim: int, ngf: int = 32, cond_dim: int = 256, n_res: int = 2) -> None:
        super().__init__()
        self.config = {"text_dim": text_dim, "ngf": ngf, "cond_dim": cond_dim, "n_res": n_res}
        self.text_mlp = nn.Sequential(nn.Linear(text_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.enc0 = nn.Sequential(nn.Conv2d(3, ngf, 7, 1, 3), nn.InstanceNorm2d(ngf), nn.ReLU())
        self.enc1 = nn.Sequential(nn.Conv2d(ngf, 2 * ngf, 4, 2, 1), nn.InstanceNorm2d(2 * ngf), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(2 * ngf, 4 * ngf, 4, 2, 1), nn.InstanceNorm2d(4 * ngf), nn.ReLU())
        self.res = nn.ModuleList([ModulatedBlock(4 * ngf, 4 * ngf, cond_dim) for _ in range(n_res)])
        self.dec2 = ModulatedBlock(4 * ngf + 2 * ngf, 2 * ngf, cond_dim)
        self.dec1 = ModulatedBlock(2 * ngf + ngf, ngf, cond_dim)
        self.head = nn.Conv2d(ngf, 3, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        cond = self.text_mlp(text.to(x))
        e0 = self.enc0(xp)
        e1 = self.enc1(e0)
        y = self.enc2(e1)
        for blk in self.res:
            y = blk(y, cond, generator)
        y = F.interpolate(y, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec2(torch.cat([y, e1], dim=1), cond, generator)
        y = F.interpolate(y, size=e0.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec1(torch.cat([y, e0], dim=1), cond, generator)
        logit = torch.logit(xp.clamp(1e-3, 1 - 1e-3))
        return torch.sigmoid(logit + self.head(y))[..., :h, :w]


def network_artifact(net: nn.Module, kind: str, meta: dict[str, Any]) -> Artifact:
    """The network as an artifact ("network/<kind>"): its weights, architecture config and the run's record."""
    config = getattr(net, "config", None) or {"ngf": getattr(net, "ngf", 16)}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    return Artifact(f"network/{kind}", state, {"config": config, "record": meta})


def save_network(net: nn.Module, path: str | os.PathLike, kind: str, meta: dict[str, Any]) -> Path:
    """Write the network as an artifact file (safetensors, atomic)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return network_artifact(net, kind, meta).save(path)


MAX_STYLE_PARAMS = 50_000_000  # the shipped stylizer has 0.6 M, CLIPstyler's largest allowed U-Net (ngf 128) 39 M


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _res_block(cin: int, cout: int) -> int:
    return _conv(cin, cout, 3) + _conv(cout, cout, 3) + _conv(cin, cout, 1)


def unet_params(ngf: int = 16) -> int:
    """StyleUNet's parameter count, from its config alone (nothing is built)."""
    g = ngf
    down = _res_block(g, g) + _conv(g, g, 4) + _res_block(g, 2 * g) + _conv(2 * g, 2 * g, 4) \
        + _res_block(2 * g, 4 * g) + _conv(4 * g, 4 * g, 4)
    up = _res_block(12 * g, 4 * g) + _res_block(6 * g, 2 * g) + _res_block(3 * g, g)
    return _conv(3, g, 1) + _res_block(g, g) + down + _res_block(4 * g, 8 * g) + up + _res_block(2 * g, g) \
        + _conv(g, 3, 1)


def stylizer_params(text_dim: int, ngf: int = 32, cond_dim: int = 256, n_res: int = 2) -> int:
    """TextStylizer's parameter count, from its config alone (nothing is built)."""
    g, c = ngf, cond_dim

    def block(cin: int, cout: int) -> int:  # ModulatedBlock
        return _conv(cin, cout, 3) + _conv(cout, cout, 3) + 2 * (c * 2 * cout + 2 * cout) + _conv(cin, cout, 1) + cout

    return (text_dim * c + c + c * c + c) + _conv(3, g, 7) + _conv(g, 2 * g, 4) + _conv(2 * g, 4 * g, 4) \
        + n_res * block(4 * g, 4 * g) + block(6 * g, 2 * g) + block(3 * g, g) + _conv(g, 3, 3)


# kind -> (class, parameter count from config, smallest value of each config key)
NETWORKS: dict[str, tuple[type[nn.Module], Any, dict[str, int]]] = {
    "clipstyler-unet": (StyleUNet, unet_params, {"ngf": 1}),
    "text-stylizer": (TextStylizer, stylizer_params, {"text_dim": 1, "ngf": 1, "cond_dim": 1, "n_res": 0}),
}


def check_config(kind: str, config: Any, where: str) -> dict[str, int]:
    """Refuse, before anything is built, a config that is not this kind's (unknown keys, non-integers) or whose
    network would be over ``MAX_STYLE_PARAMS`` parameters (or the global ``$CLIPKIT_MAX_PARAMS``, if lower)."""
    if kind not in NETWORKS:
        raise CheckpointError(f"{where}: unknown network kind '{kind}'; known: {', '.join(NETWORKS)}")
    _, count, minimum = NETWORKS[kind]
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the network config must be an object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(minimum))
    if unknown:
        raise CheckpointError(f"{where}: unknown config key(s) {unknown} for a {kind}; known: {', '.join(minimum)}")
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[key]:
            raise CheckpointError(f"{where}: config {key}={value!r} must be an integer >= {minimum[key]}")
    try:
        params = count(**config)
    except TypeError as e:  # a required key (text_dim) missing
        raise CheckpointError(f"{where}: incomplete {kind} config {config}: {e}") from e
    check_network_size(params, f"{where} ({kind} {config})", min(MAX_STYLE_PARAMS, max_params()))
    return config


def _build(kind: str, config: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> nn.Module:
    config = check_config(kind, config, where)
    with model_loading():  # its throwaway random init must not interleave with another thread's seeded build
        net: nn.Module = NETWORKS[kind][0](**config)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{where} does not match a {kind} with config {config}: {e}") from e
    return net


def network_from_artifact(artifact: Artifact, kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(network, the record it was trained with) from a "network/..." artifact."""
    found = artifact.kind.removeprefix("network/")
    if kind is not None and found != kind:
        raise CheckpointError(f"a '{artifact.kind}' artifact was given where 'network/{kind}' is needed")
    net = _build(found, artifact.meta.get("config", {}), artifact.tensors, f"'{artifact.kind}' artifact")
    return net.eval(), artifact.meta.get("record", {})


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """(kind, config, meta) of a saved network without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"network file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        if md.get("format") == ARTIFACT_FORMAT:  # the artifact file format
            meta = loads_json(md.get("meta", "{}"), f"{path}: metadata")
            if not isinstance(meta, dict):
                raise CheckpointError(f"{path}: its metadata is not a JSON object")
            out = {"kind": md.get("kind", "").removeprefix("network/"), "config": meta.get("config", {}),
                   "meta": meta.get("record", {})}
        elif "kind" not in md:  # files written before networks were artifacts keep loading
            raise CheckpointError(f"{path} is not a clipkit style network (no 'kind' metadata)")
        else:
            out = {"kind": md["kind"], "config": loads_json(md.get("config", "{}"), f"{path}: config"),
                   "meta": loads_json(md.get("meta", "{}"), f"{path}: metadata")}
    except (ValueError, AttributeError) as e:  # JSON that is not JSON, or not the expected objects
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable network metadata: {e}") from e
    if not isinstance(out["meta"], dict):
        raise CheckpointError(f"{path}: the network's record is not a JSON object")
    check_config(out["kind"], out["config"], str(path))  # before any tensor is read or module built
    return out


def load_network(path: str | os.PathLike, kind: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild the saved network from its metadata and load its weights; returns (network, meta)."""
    md = read_metadata(path)
    if kind is not None and md["kind"] != kind:
        raise CheckpointError(f"{path} holds a '{md['kind']}' network, expected '{kind}'")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    return _build(md["kind"], md["config"], state, str(path)).to(device).eval(), md["meta"]
