"""Synthetic backlit data for tests and demos: a bright, washed-out background behind an under-exposed subject.

``backlight(image, mask)`` turns any well-lit image and a soft subject mask into its backlit version: the subject is
scaled down (under-exposed), the background is lifted toward white (the bright sky a camera exposes for), so every
pair has a known well-lit reference. Images come from ``procedural_scenes`` (smooth colour fields with textured
subjects, fully seeded) or from crops of a real photo (``photo_crops``). The project's procedural world has its own
``backlit`` lighting (``clipkit.world.scene``); tests may use it too, but back-ends do not import ``world/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.guidance.images import save_image


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)


def _smooth_field(n: int, size: int, g: torch.Generator, cells: int = 3) -> Tensor:
    """Low-frequency random colour field (n, 3, size, size) in [0, 1]."""
    coarse = torch.rand(n, 3, cells, cells, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)


def procedural_scenes(n: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Well-lit scenes and subject masks: (n, 3, size, size) in [0.15, 0.95], (n, 1, size, size) in [0, 1].

    The subject is a textured ellipse covering roughly a fifth to a third of the frame, in the lower half as in
    back-lit portraits and landscapes; colours avoid the extremes so both under- and over-exposure are visible.
    """
    g = generator
    bg = 0.35 + 0.6 * _smooth_field(n, size, g)
    subject = 0.2 + 0.7 * _smooth_field(n, size, g, cells=5)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    cx, cy = _u(n, 0.3, 0.7, g), _u(n, 0.5, 0.7, g)
    rx, ry = _u(n, 0.2, 0.32, g), _u(n, 0.25, 0.4, g)
    d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    mask = (1 - d).mul(size / 6).clamp(0, 1)  # soft edge of ~3 px
    image = bg * (1 - mask) + subject * mask
    return image.clamp(0.15, 0.95), mask


def backlight(
    image: Tensor, mask: Tensor, generator: torch.Generator,
    subject_gain: tuple[float, float] = (0.2, 0.4), sky_lift: tuple[float, float] = (0.35, 0.55),
) -> Tensor:
    """Backlit version of well-lit ``image`` (B, 3, H, W) with subject ``mask`` (B, 1, H, W), values in [0, 1].

    Subject: multiplied by a gain (under-exposed). Background: I + lift * (1 - I) (lifted toward white, never
    clipped). Both drawn per image from ``generator``.
    """
    n = image.shape[0]
    gain = _u(n, *subject_gain, generator)
    lift = _u(n, *sky_lift, generator)
    subject = image * gain
    background = image + lift * (1 - image)
    return (background * (1 - mask) + subject * mask).clamp(0, 1)


def photo_crops(photo: Tensor, n: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random square crops of a real photo (1, 3, H, W), resized to ``size``, with random elliptic subject masks."""
    _, _, h, w = photo.shape
    side = min(h, w)
    crops = []
    for _ in range(n):
        s = int(side * (0.5 + 0.5 * float(torch.rand((), generator=generator))))
        y = int(torch.randint(0, h - s + 1, (), generator=generator))
        x = int(torch.randint(0, w - s + 1, (), generator=generator))
        crops.append(F.interpolate(photo[..., y : y + s, x : x + s], size=(size, size), mode="area"))
    _, mask = procedural_scenes(n, size, generator)
    return torch.cat(crops).clamp(0, 1), mask


@dataclass
class SyntheticPairs:
    """Backlit images, their well-lit references and subject masks, all (n, C, size, size)."""

    backlit: Tensor
    welllit: Tensor
    mask: Tensor


def synthetic_pairs(n: int, size: int = 64, seed: int = 0, photo: Tensor | None = None) -> SyntheticPairs:
    """``n`` seeded (backlit, well-lit, mask) triples from procedural scenes or crops of ``photo``."""
    g = torch.Generator().manual_seed(seed)
    welllit, mask = photo_crops(photo, n, size, g) if photo is not None else procedural_scenes(n, size, g)
    return SyntheticPairs(backlight(welllit, mask, g), welllit, mask)


def write_folders(root: str | Path, n: int = 32, size: int = 128, seed: int = 0) -> tuple[Path, Path]:
    """Write unpaired demo folders ``root/backlit`` and ``root/welllit`` (different scenes in each) as PNGs."""
    root = Path(root)
    a = synthetic_pairs(n, size, seed)
    b = synthetic_pairs(n, size, seed + 1)
    dirs = root / "backlit", root / "welllit"
    for d, images in zip(dirs, (a.backlit, b.welllit)):
        for i, im in enumerate(images):
            save_image(im[None], d / f"{i:04d}.png")
    return dirs
