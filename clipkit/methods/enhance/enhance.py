"""Backlit enhancement: a trained illumination network (CLIP-LIT / RAVE, published or the project's own) applied
to a photo at full size, tiled where large, with a record of what was done (weights hash, timings, brightness
statistics before/after). ``enhance`` is the method; ``enhance_image_tensor`` the tensor-level core.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import Tensor

from clipkit.guidance import images
from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.clip import default_device
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, StepInfo, resolve_settings

from . import checkpoints
from .metrics import dark_region_gain, image_stats
from .network import EnhanceNet, apply_illumination
from .tiling import DEFAULT_TILE, OnTile, enhance_tensor

ILLUMINATION_KIND = "map/illumination"  # an illumination map L (B, 1, H, W) and what made it
AUTO_TILE = DEFAULT_TILE  # tile="auto": tiles of 320 (fastest measured, and memory stays bounded; tiling.py)


@dataclass
class EnhanceSettings:
    """Backlit enhancement: which trained illumination network, and how strongly to apply it."""

    checkpoint: str = "clip-lit"
    strength: float = 1.0
    tile: int = 0  # core size of tiles in pixels; 0 = automatic (320, the fastest measured)

    def validate(self) -> EnhanceSettings:
        if not 0 <= self.strength <= 4:
            raise ParameterError(f"strength={self.strength} must be in [0, 4]")
        if self.tile != 0 and not 64 <= self.tile <= 8192:
            raise ParameterError(f"tile={self.tile} must be 0 (automatic) or in 64..8192")
        if not self.checkpoint:
            raise ParameterError("checkpoint must name a published network (e.g. 'clip-lit') or a file")
        return self


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
        return AUTO_TILE if max(h, w) > AUTO_TILE else None
    if tile is not None and not isinstance(tile, int):
        raise ValueError(f"tile must be an int, None or 'auto', got {tile!r}")
    return tile


def enhance_with_light(
    x: Tensor,
    checkpoint: str | os.PathLike | EnhanceNet = "clip-lit",
    tile: int | str | None = "auto",
    strength: float = 1.0,
    device: str = "cpu",
    light: Tensor | None = None,
    on_tile: OnTile | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """(enhanced image, illumination map, record); the core of ``enhance``. Given ``light`` (this image's map from
    an earlier call with the same network and tiles), the network does not run: only ``apply_illumination`` at
    ``strength``, the last step of a fresh call, so any strength redraws in milliseconds with the same pixels."""
    x = as_tensor(x)
    net = get_network(checkpoint, device)
    x = x.to(device=device, dtype=torch.float32)
    t0 = time.perf_counter()
    tile_px = _tile_for(tile, *x.shape[-2:])
    if light is None:
        out, light = enhance_tensor(net, x, tile=tile_px, strength=strength, on_tile=on_tile)
    else:
        light = light.to(device=x.device, dtype=x.dtype)
        out = apply_illumination(x, light, strength)
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
    return out, light, record


def enhance_image_tensor(
    x: Tensor,
    checkpoint: str | os.PathLike | EnhanceNet = "clip-lit",
    tile: int | str | None = "auto",
    strength: float = 1.0,
    device: str = "cpu",
) -> tuple[Tensor, dict]:
    """Tensor in, tensor out (B, 3, H, W) in [0, 1], with the record."""
    out, _, record = enhance_with_light(x, checkpoint, tile, strength, device)
    return out, record


def picture_id(x: Tensor) -> str:
    """What makes a picture the same picture for its illumination map: its shape and float pixels."""
    t = x.detach().to("cpu", torch.float32).contiguous()
    return f"{tuple(t.shape)}:" + hashlib.blake2b(t.numpy().tobytes(), digest_size=16).hexdigest()


def reused_light(illumination: Artifact, picture: str) -> Tensor:
    """The map of an earlier run, checked to be this picture's (``picture_id``; else another picture's brightening
    would silently come out): the cache behind the app's live strength slider."""
    if illumination.meta.get("picture") != picture:
        raise ParameterError("the illumination map given was computed for another picture: leave it out (in the "
                             "app: press Run) to compute this picture's")
    return illumination.tensors["light"]


class _Cancelled(Exception):
    """Raised between tiles when the run's cancel token is set."""


def enhance(
    image: Image.Image | Tensor | str | os.PathLike,
    settings: EnhanceSettings | None = None,
    clip: object | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
    illumination: Artifact | None = None,
    **overrides,
) -> RunResult:
    """Enhance back-lit image(s) at full size in one pass of the network (``clip`` is unused: the network was
    trained with one; the argument keeps the one runner signature).

    The illumination map comes back in memory as ``extras["illumination"]`` (4 bytes a pixel: not saved beside
    every photo); given back as ``illumination`` with the same picture, network and tiles, it replaces the
    network's pass, so a new strength costs milliseconds and equals a fresh run (the app's live slider)."""
    s = resolve_settings(EnhanceSettings, settings, overrides)
    x = as_tensor(image)
    record = {"method": "enhance", **asdict(s)}
    if cancel is not None and cancel.cancelled:
        return RunResult(x, record, [], {}, cancelled=True)
    picture = picture_id(x)  # hashed once a run: the live slider's redraw is this method's hot path
    light = reused_light(illumination, picture) if illumination is not None else None
    t0 = time.perf_counter()
    tiles = [1, 1]

    def on_tile(done: int, total: int) -> None:
        """Progress per tile; a cancel stops between tiles (half an illumination map is no picture)."""
        tiles[:] = [done, total]
        if cancel is not None and cancel.cancelled:
            raise _Cancelled
        if callback is not None and done < total:
            callback(StepInfo(done, total, {}, None))

    try:
        out, light, facts = enhance_with_light(x, s.checkpoint, tile=s.tile or "auto", strength=s.strength,
                                               device=str(default_device()), light=light, on_tile=on_tile)
    except checkpoints.CheckpointError as e:
        raise ParameterError(str(e)) from e
    except _Cancelled:
        return RunResult(x, record, [], {"enhance_s": time.perf_counter() - t0}, cancelled=True)
    made_by = {"weights_sha256": facts["weights_sha256"], "tile": facts["tile"]}
    if illumination is not None and {k: illumination.meta.get(k) for k in made_by} != made_by:
        raise ParameterError("the illumination map given was computed with other weights or tiles: leave it out "
                             "(in the app: press Run) to compute it with these")
    seconds = time.perf_counter() - t0
    values = {"dark_region_gain": float(facts["dark_region_gain"]),
              "illumination_mean": float(facts["illumination_mean"])}
    out = out.cpu()
    if callback is not None:
        callback(StepInfo(tiles[1], tiles[1], values, out))
    extras = {k: facts[k] for k in ("weights_sha256", "before", "after", "ms_per_megapixel") if k in facts}
    extras["illumination_reused"] = illumination is not None
    extras["illumination"] = Artifact(ILLUMINATION_KIND, {"light": light.cpu()}, {"picture": picture, **made_by})
    return RunResult(out, record, [values], {"enhance_s": seconds}, extras=extras)
