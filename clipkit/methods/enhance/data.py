"""Unpaired training data: a pool of backlit images and a pool of well-lit images, sampled with a generator.

Images are decoded once and kept as uint8 tensors resized so their short side is ``size``; a sample is a random
``size`` x ``size`` crop with a random horizontal flip, every choice drawn from the caller's ``torch.Generator`` so
a run (and its resume) sees the same batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipkit.guidance.errors import ParameterError
from clipkit.guidance.images import load_image, pil_to_tensor

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: str | os.PathLike, required: bool = True) -> list[Path]:
    """Image files directly inside ``folder``, sorted (so a pool's order, and a seeded run, is reproducible).

    ``required``: a missing or empty folder is an error (else an empty list).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS) \
        if folder.is_dir() else []
    if required and not files:
        what = "does not exist" if not folder.is_dir() else f"holds no images ({', '.join(sorted(IMAGE_EXTS))})"
        raise ParameterError(f"image folder {folder} {what}")
    return files


class ImagePool:
    """Images of one kind (all backlit or all well-lit) with seeded random crops."""

    def __init__(self, images: list[Tensor], size: int) -> None:
        self.images, self.size = images, size

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, size: int, max_images: int | None = None) -> ImagePool:
        images = []
        for path in list_images(folder)[:max_images]:
            im = load_image(path)
            scale = size / min(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BICUBIC)
            images.append((pil_to_tensor(im)[0] * 255).round().to(torch.uint8))
        return cls(images, size)

    @classmethod
    def from_tensor(cls, images: Tensor, size: int | None = None) -> ImagePool:
        """A pool over an in-memory batch (N, 3, H, W) in [0, 1] (resized to ``size`` if given)."""
        if size is not None and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="area")
        return cls([(im * 255).round().clamp(0, 255).to(torch.uint8) for im in images], size or images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, 3, size, size) float in [0, 1]: random image, random crop, random horizontal flip."""
        out = []
        for _ in range(n):
            im = self.images[int(torch.randint(len(self.images), (), generator=generator))]
            h, w = im.shape[-2:]
            y = int(torch.randint(h - self.size + 1, (), generator=generator))
            x = int(torch.randint(w - self.size + 1, (), generator=generator))
            crop = im[:, y : y + self.size, x : x + self.size]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop = crop.flip(-1)
            out.append(crop)
        return torch.stack(out).float() / 255

    def all(self) -> Tensor:
        """Every image, centre-cropped to size x size (for embedding means: deterministic, no augmentation)."""
        out = []
        for im in self.images:
            h, w = im.shape[-2:]
            y, x = (h - self.size) // 2, (w - self.size) // 2
            out.append(im[:, y : y + self.size, x : x + self.size])
        return torch.stack(out).float() / 255


@dataclass
class UnpairedData:
    """The two pools a CLIP-LIT / RAVE run trains on."""

    backlit: ImagePool
    welllit: ImagePool

    @classmethod
    def from_folders(cls, backlit: str | os.PathLike, welllit: str | os.PathLike, size: int,
                     max_images: int | None = None) -> UnpairedData:
        return cls(ImagePool.from_folder(backlit, size, max_images), ImagePool.from_folder(welllit, size, max_images))
