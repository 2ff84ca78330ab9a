"""Python API for backlit enhancement with a trained illumination network (published or the project's own).

``enhance(image, checkpoint="clip-lit")`` returns the enhanced PIL image and a record of what was done (settings,
weights hash, timings, brightness statistics before/after); ``enhance_pair`` returns (before, after) at the same
size for the app's before/after slider. Presets (``presets/enhance-*.json``) name a checkpoint and a strength.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import Tensor

from guidance import images

from . import checkpoints
from .metrics import dark_region_gain, image_stats
from .network import EnhanceNet
from .tiling import enhance_tensor

AUTO_TILE = 1024  # core size used by tile="auto"
AUTO_TILE_PIXELS = 2_000_000  # "auto" tiles images larger than this, bounding memory at ~2 GB


def load_image(path: str | os.PathLike, exif: bool = True) -> Tensor:
    """(1, 3, H, W) float32 in [0, 1], decoded as the authors' inference does (uint8 / 255).

    ``exif`` applies the camera's orientation tag (the authors' code ignores it; it changes nothing for images
    without one). Grey, palette and alpha images are converted by ``guidance.images.load_image``.
    """
    im = images.load_image(path)
    return images.pil_to_tensor(ImageOps.exif_transpose(im) if exif else im)


def as_tensor(image: Image.Image | Tensor | str | os.PathLike) -> Tensor:
    """Any accepted image input -> (B, 3, H, W) float tensor in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return images.pil_to_tensor(ImageOps.exif_transpose(image).convert("RGB"))
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an image tensor (B, 3, H, W) or (3, H, W), got {tuple(image.shape)}")
    return image


def preset_settings(name: str | os.PathLike) -> dict:
    """Settings of an enhance preset (``gentle`` -> presets/enhance-gentle.json, a .json path, or a clipkit PNG),
    read through the project's preset format (``generators.presets``), plus its ``name``."""
    from generators.presets import load_preset

    ref = str(name)
    ref = ref if ref.startswith("enhance-") or Path(ref).suffix else f"enhance-{ref}"
    p = load_preset(ref)
    if p.method != "enhance":
        raise ValueError(f"preset {p.name!r} is for method {p.method!r}, not enhance")
    return {**p.settings, "name": p.name}


@functools.lru_cache(maxsize=4)
def _cached_network(path: str, device: str, mtime: float) -> EnhanceNet:
    return checkpoints.load_network(path, device)


@functools.lru_cache(maxsize=32)
def _cached_sha(path: str, mtime: float) -> str:
    return checkpoints.sha256(path)


def get_network(checkpoint: str | os.PathLike | EnhanceNet = "clip-lit", device: str = "cpu") -> EnhanceNet:
    """Network for a name/path (cached, reloaded if the file changes) or pass an ``EnhanceNet`` through."""
    if isinstance(checkpoint, EnhanceNet):
        return checkpoint
    path = checkpoints.resolve(checkpoint)
    return _cached_network(str(path), str(device), path.stat().st_mtime)


def _tile_for(tile: int | str | None, h: int, w: int) -> int | None:
    if tile == "auto":
        return AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
    if tile is not None and not isinstance(tile, int):
        raise ValueError(f"tile must be an int, None or 'auto', got {tile!r}")
    return tile


def enhance_image_tensor(
    x: Tensor,
    checkpoint: str | os.PathLike | EnhanceNet = "clip-lit",
    tile: int | str | None = "auto",
    strength: float = 1.0,
    device: str = "cpu",
) -> tuple[Tensor, dict]:
    """Tensor in, tensor out (B, 3, H, W) in [0, 1], with the record; the core of ``enhance``."""
    x = as_tensor(x)
    net = get_network(checkpoint, device)
    x = x.to(device=device, dtype=torch.float32)
    t0 = time.perf_counter()
    tile_px = _tile_for(tile, *x.shape[-2:])
    out, light = enhance_tensor(net, x, tile=tile_px, strength=strength)
    seconds = time.perf_counter() - t0
    mp = x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6
    source = getattr(net, "source", None)
    record = {
        "task": "enhance",
        "checkpoint": checkpoint if isinstance(checkpoint, str) else (source or "<in-memory network>"),
        "weights_file": source,
        "weights_sha256": _cached_sha(source, Path(source).stat().st_mtime) if source else None,
        "strength": strength,
        "tile": tile_px,
        "size": [int(x.shape[-1]), int(x.shape[-2])],
        "seconds": round(seconds, 4),
        "ms_per_megapixel": round(1000 * seconds / mp, 2),
        "before": image_stats(x),
        "after": image_stats(out),
        "dark_region_gain": round(dark_region_gain(x, out), 5),
        "illumination_mean": round(light.mean().item(), 5),
    }
    return out, record


def enhance(
    image: Image.Image | Tensor | str | os.PathLike,
    checkpoint: str | os.PathLike | EnhanceNet | None = None,
    tile: int | str | None = "auto",
    strength: float | None = None,
    preset: str | None = None,
    device: str = "cpu",
) -> tuple[Image.Image, dict]:
    """Enhance one back-lit image at full resolution: returns (PIL image, record).

    ``image``: PIL image, (1, 3, H, W)/(3, H, W) tensor in [0, 1], or a file path. ``checkpoint``: a published name
    (``clip-lit``, ``rave-unpaired`` ... see ``checkpoints.PUBLISHED``), a .pth/.safetensors path or a network;
    ``tile``: core size in pixels, None (untiled) or "auto" (tiles above 2 MP; tiled equals untiled to ~1e-5);
    ``strength``: 0 = unchanged, 1 = as trained, >1 stronger; ``preset`` (``gentle``, ``strong``, ``clip-lit`` ...
    or a path) supplies the defaults.
    """
    p = preset_settings(preset) if preset else {}
    checkpoint = checkpoint if checkpoint is not None else p.get("checkpoint", "clip-lit")
    strength = strength if strength is not None else float(p.get("strength", 1.0))
    if p and tile == "auto" and p.get("tile"):
        tile = int(p["tile"])
    out, record = enhance_image_tensor(as_tensor(image), checkpoint, tile, strength, device)
    if preset:
        record["preset"] = p["name"]
    return images.tensor_to_pil(out), record


def enhance_pair(image: Image.Image | Tensor | str | os.PathLike, **kw) -> tuple[tuple[Image.Image, Image.Image], dict]:
    """((before, after), record) with both images the same size, as a before/after slider wants them."""
    x = as_tensor(image)
    after, record = enhance(x, **kw)
    return (images.tensor_to_pil(x), after), record
