"""Region focus: a mask decides what the CLIP encoder sees and which pixels an edit may change.

Standard CLIP has no alpha input (Alpha-CLIP adds one); the same effect is had by (1) cropping views
inside the mask's bounding box and (2) alpha-blending the image over a constant background before
encoding, so pixels outside the mask neither inform the loss nor receive its gradient. `composite`
then puts the original pixels back outside the mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipkit.guidance.errors import ImageError

BACKGROUND = 0.5


def prepare_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Check a mask and bring it to (B, 1, H, W) float in [0, 1] at the images' size."""
    if not isinstance(mask, torch.Tensor):
        raise ImageError(f"mask must be a tensor, got {type(mask).__name__}")
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] != 1 or images.shape[0] == 1 else m[None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ImageError(f"mask must have shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if float(m.min()) < 0 or float(m.max()) > 1:
        raise ImageError("mask values must be in [0, 1]")
    if float(m.max()) == 0:
        raise ImageError("mask is empty: nothing is selected for editing")
    if m.shape[-2:] != images.shape[-2:]:
        m = F.interpolate(m, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return m.to(images.device).expand(images.shape[0], -1, -1, -1)


def feather(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """A soft inner edge ``radius`` px wide: the mask blurred, rescaled so its edge falls to 0, and cut to the
    mask, so an edit fades in toward the stroke's edge (no seam) and nothing outside the mask may change."""
    if radius <= 0:
        return mask
    from kornia.filters import gaussian_blur2d

    sigma = radius / 2
    size = 2 * math.ceil(2 * sigma) + 1
    soft = gaussian_blur2d(mask, (size, size), (sigma, sigma), border_type="replicate")
    return ((2 * soft - 1).clamp(0, 1) * mask).where(mask > 0, torch.zeros_like(mask))


def focus(images: torch.Tensor, mask: torch.Tensor | None, background: float = BACKGROUND) -> torch.Tensor:
    """Alpha-blend over a constant grey: the encoder sees only the masked region, gradients reach only it."""
    if mask is None:
        return images
    return images * mask + background * (1 - mask)


def mask_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the union of all masks in the batch, in pixels."""
    on = (mask.amax(dim=(0, 1)) > threshold).nonzero()
    if on.numel() == 0:
        raise ImageError(f"mask has no pixel above {threshold}")
    (y0, x0), (y1, x1) = on.min(0).values.tolist(), on.max(0).values.tolist()
    return float(x0), float(y0), float(x1 + 1), float(y1 + 1)


def composite(edited: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Edited pixels inside the mask, the original ones (exactly) outside."""
    if mask is None:
        return edited
    return torch.where(mask > 0, edited * mask + original * (1 - mask), original)
