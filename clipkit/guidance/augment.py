"""Views of an image for robust CLIP gradients: multi-scale cutouts and perspective patch crops.

One gradient from one view of an image is easy to fool (adversarial noise); averaging over many random
crops at several scales (VQGAN+CLIP, CLIP-guided diffusion) or perspective-warped patches (CLIPstyler)
makes the gradient follow what the image shows. Every random choice comes from the caller's `torch.Generator`
(never torch's global RNG), so concurrent runs in one process each reproduce alone.

Cutouts build their views with batched ``grid_sample`` calls whose backward is cheap: one for the crops (skipped
when a crop is the whole image at the output size), one for each view's flip and affine jitter together. They
draw the same random numbers in the same order as the per-operation path (torchvision's ``roi_align`` crops, then
kornia's flips and warps on the drawn subsets) and sample the same points with the same bilinear weights, so the
views are the same to float rounding (``tests/test_guide.py``) at a fraction of the cost: roi_align's backward
alone took 2-4x the whole fused view. Crops larger than the output (downsampling: roi_align area-averages them)
keep roi_align for the crop.
Views are the same for every image in a batch, so paired images (an edit and its source) see the same crops.
kornia and torchvision.ops (which pulls in torch._dynamo, ~1.5 s) are imported where first used, not with this
module: the app's first page needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipkit.guidance.errors import ParameterError


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format `x` is in (channels-last or contiguous), for operands made to match it."""
    return torch.channels_last if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


def _where_drawn(images: torch.Tensor, p: float, generator: torch.Generator | None, op) -> torch.Tensor:
    """``op`` applied to a random subset of the batch (each image with probability ``p``), the rest as they are."""
    chosen = (torch.rand(images.shape[0], generator=generator) < p).nonzero().flatten().to(images.device)
    if chosen.numel() == 0:
        return images
    return images.index_copy(0, chosen, op(images.index_select(0, chosen), chosen.numel()))


def jitter(images: torch.Tensor, generator: torch.Generator | None, degrees: float = 10.0,
           translate: float = 0.05) -> torch.Tensor:
    """Random horizontal flips (p 0.5), then random small affine moves (p 0.5: up to ``degrees`` of rotation and
    ``translate`` of the side in shift, border padding), every draw from ``generator`` (kornia's random modules
    draw from torch's global RNG, which concurrent runs share)."""
    import kornia

    images = _where_drawn(images, 0.5, generator, lambda x, n: x.flip(-1))
    h, w = images.shape[-2:]

    def affine(x: torch.Tensor, n: int) -> torch.Tensor:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * degrees
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * torch.tensor([w, h])
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(n, 2)
        m = kornia.geometry.transform.get_rotation_matrix2d(centre, angle, torch.ones(n, 2))
        m[:, :, 2] += shift
        return kornia.geometry.transform.warp_affine(x, m.to(x), (h, w), padding_mode="border")

    return _where_drawn(images, 0.5, generator, affine)


def perspective(images: torch.Tensor, distortion: float, generator: torch.Generator | None) -> torch.Tensor:
    """Each image warped by a random perspective: every corner moves inward by up to ``distortion`` of half the
    side (CLIPstyler's RandomPerspective(0.5)), zeros outside, every draw from ``generator``."""
    import kornia

    n, (h, w) = images.shape[0], images.shape[-2:]
    corners = torch.tensor([[0.0, 0.0], [w - 1, 0.0], [w - 1, h - 1], [0.0, h - 1]]).expand(n, 4, 2)
    inward = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    reach = distortion * torch.tensor([w / 2, h / 2])
    moved = corners + torch.rand(n, 4, 2, generator=generator) * reach * inward
    m = kornia.geometry.transform.get_perspective_transform(corners, moved)
    return kornia.geometry.transform.warp_perspective(images, m.to(images), (h, w))


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every box (n, 4: x0, y0, x1, y1 in pixels) out of every image -> (B*n, 3, size, size), image-major."""
    from torchvision.ops import roi_align

    b, n = images.shape[0], boxes.shape[0]
    idx = torch.arange(b, device=images.device, dtype=boxes.dtype).repeat_interleave(n)
    rois = torch.cat([idx[:, None], boxes.to(images.device).repeat(b, 1)], dim=1)
    return roi_align(images, rois.to(images.dtype), output_size=size, sampling_ratio=0, aligned=True)


def _normalised(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (..., 2: x, y; pixel centres at integers) -> grid_sample's [-1, 1] (align_corners=True)."""
    return xy * torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], dtype=xy.dtype) - 1


def _sample_stacked(images: torch.Tensor, grid: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear samples of each image (B, C, H, W) at its `grid` (B, n, size, size, 2: pixel x, y), border
    padding -> (B*n, C, size, size) image-major. The n views of an image are one tall grid, so one grid_sample
    call reads each image once (no copies of the input); the one copy that orders the views image-major makes
    them channels-last, the layout convolutional CLIPs run fastest in on a CPU."""
    b, n = grid.shape[:2]
    c = images.shape[1]
    flat = _normalised(grid, images.shape[-2], images.shape[-1]).to(images).reshape(b, n * size, size, 2)
    out = F.grid_sample(images, flat, mode="bilinear", padding_mode="border", align_corners=True)
    out = out.view(b, c, n, size, size).permute(0, 2, 3, 4, 1).reshape(b * n, size, size, c)
    return out.permute(0, 3, 1, 2)


def crop_grid(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size, 2) pixel positions of `size`-pixel crops of `boxes` (x0, y0, x1, y1): roi_align's
    (aligned=True) sample points when a box is no larger than `size`, where it takes one sample per output pixel."""
    steps = (torch.arange(size, dtype=boxes.dtype) + 0.5) / size
    xs = boxes[:, 0:1] - 0.5 + steps * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] - 0.5 + steps * (boxes[:, 3:4] - boxes[:, 1:2])
    n = boxes.shape[0]
    return torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=-1)


def jitter_grid(n: int, size: int, generator: torch.Generator | None, degrees: float = 10.0,
                translate: float = 0.05) -> torch.Tensor:
    """(n, size, size, 2) pixel positions where `jitter` reads each of n square views, drawing from `generator`
    exactly what `jitter` draws, in its order: flips (p 0.5), then which views move (p 0.5), their angles and
    shifts. Each output pixel reads the view at the inverse of kornia's rotation matrix about the centre (plus
    the shift), mirrored when flipped (the flip comes first)."""
    flipped = torch.rand(n, generator=generator) < 0.5
    moved = (torch.rand(n, generator=generator) < 0.5).nonzero().flatten()
    angle, shift = torch.zeros(n), torch.zeros(n, 2)
    if moved.numel():
        k = moved.numel()
        angle[moved] = (torch.rand(k, generator=generator) * 2 - 1) * degrees
        shift[moved] = (torch.rand(k, 2, generator=generator) * 2 - 1) * translate * size
    rad = torch.deg2rad(angle)
    cos, sin = rad.cos(), rad.sin()
    centre = (size - 1) / 2
    # kornia / OpenCV: dst = [[cos, sin], [-sin, cos]] (src - centre) + centre + shift; invert for the source
    pix = torch.arange(size, dtype=torch.float32)
    dx = (pix[None, None, :] - centre - shift[:, 0, None, None]).expand(n, size, size)
    dy = (pix[None, :, None] - centre - shift[:, 1, None, None]).expand(n, size, size)
    c, s = cos[:, None, None], sin[:, None, None]
    sx = c * dx - s * dy + centre
    sy = s * dx + c * dy + centre
    sx = torch.where(flipped[:, None, None], (size - 1) - sx, sx)
    return torch.stack([sx, sy], dim=-1)


def turn(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image (B, C, H, W) by its angle (B,) about its centre; uncovered corners take its mean colour.

    The fill is detached: a fill that carries gradient lets an optimiser paint the corners of every turned
    view by shifting the whole image toward the prompt's colour.
    """
    import kornia

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

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 1024:
            raise ParameterError(f"cutouts n={self.n} must be in 1..1024")
        if not 0 < self.min_frac <= 1:
            raise ParameterError(f"cutouts min_frac={self.min_frac} must be in (0, 1]")
        if not 0.05 <= self.cut_pow <= 20:
            raise ParameterError(f"cutouts cut_pow={self.cut_pow} must be in [0.05, 20]")
        if not 0 <= self.rotate <= 180:
            raise ParameterError(f"view rotation {self.rotate} must be in [0, 180] degrees")

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
        h, w = images.shape[-2:]
        boxes = self.boxes(h, w, generator, region)
        b, n = images.shape[0], boxes.shape[0]
        whole = h == w == size and bool((boxes == torch.tensor([0.0, 0.0, w, h])).all())
        if whole:  # each crop is the image itself: sample the images, not copies of them
            crops = images
        elif bool((boxes[:, 2:] - boxes[:, :2] <= size).all()):  # roi_align's one sample a pixel, batched
            crops = _sample_stacked(images, crop_grid(boxes, size)[None].expand(b, -1, -1, -1, -1), size)
        else:  # downsampling crops: roi_align's area average
            crops = crop_boxes(images, boxes, size)
        if self.jitter:
            grid = jitter_grid(b * n, size, generator)
            if whole:
                crops = _sample_stacked(images, grid.view(b, n, size, size, 2), size)
            else:
                crops = _sample_stacked(crops, grid[:, None], size)
        elif whole:
            crops = images.repeat_interleave(n, dim=0)
        if self.rotate > 0:
            crops = turn(crops, (torch.rand(crops.shape[0], generator=generator) * 2 - 1) * self.rotate)
        if self.noise > 0:
            sigma = torch.rand(crops.shape[0], 1, 1, 1, generator=generator) * self.noise
            noise = torch.randn(crops.shape, generator=generator).mul_(sigma)
            crops = crops + noise.to(crops.device).contiguous(memory_format=_layout(crops))
        return crops.clamp(0, 1)


@dataclass(eq=False)
class PatchCrops:
    """CLIPstyler's patches: `n` crops of `crop` pixels, each perspective-warped (distortion 0.5)."""

    n: int = 64
    crop: int = 128
    distortion: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 1024:
            raise ParameterError(f"patch count n={self.n} must be in 1..1024")
        if not 0 <= self.distortion <= 1:
            raise ParameterError(f"perspective distortion {self.distortion} must be in [0, 1]")

    def __call__(self, images: torch.Tensor, size: int, generator: torch.Generator | None = None, region=None):
        h, w = images.shape[-2:]
        crop = min(self.crop, h, w)
        x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
        span_x, span_y = max(0.0, x1 - x0 - crop), max(0.0, y1 - y0 - crop)
        ox = (x0 + torch.rand(self.n, generator=generator) * span_x).floor()
        oy = (y0 + torch.rand(self.n, generator=generator) * span_y).floor()
        boxes = torch.stack([ox, oy, ox + crop, oy + crop], dim=1)
        patches = crop_boxes(images, boxes, size)
        return perspective(patches, self.distortion, generator) if self.distortion > 0 else patches
