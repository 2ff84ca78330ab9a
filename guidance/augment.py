"""Views of an image for robust CLIP gradients: multi-scale cutouts and perspective patch crops.

One gradient from one view of an image is easy to fool (adversarial noise); averaging over many random
crops at several scales (VQGAN+CLIP, CLIP-guided diffusion) or perspective-warped patches (CLIPstyler)
makes the gradient follow what the image shows. Crops use torchvision's `roi_align` with adaptive
sampling, which area-averages (antialiases) and batches every crop of every image in one call; the
jitter after it is kornia.augmentation. Random choices come from the caller's `torch.Generator`.
Views are the same for every image in a batch, so paired images (an edit and its source) see the same crops.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import kornia
import kornia.augmentation as K
import torch
from torchvision.ops import roi_align

from guidance.errors import ParameterError

_GLOBAL_RNG_LOCK = threading.Lock()


def _seeded(generator: torch.Generator | None, fn):
    """Run kornia (which draws from torch's global RNG) reproducibly from our generator.

    The global RNG is process-wide, so the seed-and-draw holds a lock: two runs in two threads would
    otherwise interleave their draws and neither would reproduce.
    """
    if generator is None:
        return fn()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every box (n, 4: x0, y0, x1, y1 in pixels) out of every image -> (B*n, 3, size, size), image-major."""
    b, n = images.shape[0], boxes.shape[0]
    idx = torch.arange(b, device=images.device, dtype=boxes.dtype).repeat_interleave(n)
    rois = torch.cat([idx[:, None], boxes.to(images.device).repeat(b, 1)], dim=1)
    return roi_align(images, rois.to(images.dtype), output_size=size, sampling_ratio=0, aligned=True)


def turn(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image (B, C, H, W) by its angle (B,) about its centre; uncovered corners take its mean colour.

    The fill is detached: a fill that carries gradient lets an optimiser paint the corners of every turned
    view by shifting the whole image toward the prompt's colour.
    """
    mean = images.mean(dim=(-2, -1), keepdim=True).detach()
    return kornia.geometry.transform.rotate(images - mean, degrees.to(images)) + mean


@dataclass(eq=False)
class Cutouts:
    """`n` square crops per image, sides between `min_frac` of the short side and the whole image.

    `cut_pow` > 1 favours small crops (detail), < 1 large ones (composition); `size` defaults to the
    CLIP input size, which the guide supplies. `rotate` turns every view by a random angle up to that many
    degrees (corners filled with the view's mean colour), so an image must read as the prompt from every
    side; it suits CLIPs that know shapes at any turn. Measured with the world guide, which knows them upright
    only: "a red circle" becomes a round octagon instead of a point-down blob, but no more a circle to the judge.
    """

    n: int = 32
    size: int | None = None
    cut_pow: float = 1.0
    min_frac: float = 0.25
    noise: float = 0.05
    jitter: bool = True
    rotate: float = 0.0
    _augs: torch.nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 1024:
            raise ParameterError(f"cutouts n={self.n} must be in 1..1024")
        if not 0 < self.min_frac <= 1:
            raise ParameterError(f"cutouts min_frac={self.min_frac} must be in (0, 1]")
        if not 0.05 <= self.cut_pow <= 20:
            raise ParameterError(f"cutouts cut_pow={self.cut_pow} must be in [0.05, 20]")
        if not 0 <= self.rotate <= 180:
            raise ParameterError(f"view rotation {self.rotate} must be in [0, 180] degrees")
        self._augs = torch.nn.Sequential(
            K.RandomHorizontalFlip(p=0.5),
            K.RandomAffine(degrees=10, translate=(0.05, 0.05), padding_mode="border", p=0.5),
        )

    def boxes(self, height: int, width: int, generator: torch.Generator | None, region=None) -> torch.Tensor:
        """Sample crop boxes, inside `region` (x0, y0, x1, y1) when one is given."""
        x0, y0, x1, y1 = region if region is not None else (0, 0, width, height)
        side_max = min(x1 - x0, y1 - y0)
        side_min = min(side_max, max(1.0, self.min_frac * min(height, width)))
        u = torch.rand(self.n, generator=generator)
        side = u.pow(self.cut_pow) * (side_max - side_min) + side_min
        ox = x0 + torch.rand(self.n, generator=generator) * (x1 - x0 - side)
        oy = y0 + torch.rand(self.n, generator=generator) * (y1 - y0 - side)
        return torch.stack([ox, oy, ox + side, oy + side], dim=1)

    def __call__(self, images: torch.Tensor, size: int, generator: torch.Generator | None = None, region=None):
        size = self.size or size
        boxes = self.boxes(images.shape[-2], images.shape[-1], generator, region)
        crops = crop_boxes(images, boxes, size)
        if self.jitter:
            crops = _seeded(generator, lambda: self._augs(crops))
        if self.rotate > 0:
            crops = turn(crops, (torch.rand(crops.shape[0], generator=generator) * 2 - 1) * self.rotate)
        if self.noise > 0:
            sigma = torch.rand(crops.shape[0], 1, 1, 1, generator=generator) * self.noise
            crops = crops + sigma.to(crops) * torch.randn(crops.shape, generator=generator).to(crops)
        return crops.clamp(0, 1)


@dataclass(eq=False)
class PatchCrops:
    """CLIPstyler's patches: `n` crops of `crop` pixels, each perspective-warped (distortion 0.5)."""

    n: int = 64
    crop: int = 128
    distortion: float = 0.5
    _augs: torch.nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 1024:
            raise ParameterError(f"patch count n={self.n} must be in 1..1024")
        if not 0 <= self.distortion <= 1:
            raise ParameterError(f"perspective distortion {self.distortion} must be in [0, 1]")
        self._augs = K.RandomPerspective(distortion_scale=self.distortion, p=1.0)

    def __call__(self, images: torch.Tensor, size: int, generator: torch.Generator | None = None, region=None):
        h, w = images.shape[-2:]
        crop = min(self.crop, h, w)
        x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
        span_x, span_y = max(0.0, x1 - x0 - crop), max(0.0, y1 - y0 - crop)
        ox = (x0 + torch.rand(self.n, generator=generator) * span_x).floor()
        oy = (y0 + torch.rand(self.n, generator=generator) * span_y).floor()
        boxes = torch.stack([ox, oy, ox + crop, oy + crop], dim=1)
        patches = crop_boxes(images, boxes, size)
        return _seeded(generator, lambda: self._augs(patches)) if self.distortion > 0 else patches
