"""Image statistics and quality metrics for backlit enhancement.

Luminance statistics need no reference; PSNR and SSIM (kornia) need a well-lit reference of the same scene; the CLIP
well-lit score needs a CLIP (and optionally a learned prompt pair).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipkit.guidance import losses

# Rec. 709 luma weights on the encoded (sRGB) values, as image editors report brightness.
LUMA = (0.2126, 0.7152, 0.0722)
DARK = 0.2  # a pixel is "dark" when its luma is below this


def luma(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) Rec. 709 luma."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def image_stats(x: Tensor, dark: float = DARK) -> dict[str, object]:
    """Mean RGB, mean luma and fraction of dark pixels of a batch (all pixels of all images)."""
    y = luma(x)
    return {
        "mean_rgb": [round(v, 5) for v in x.mean((0, 2, 3)).tolist()],
        "luminance": round(y.mean().item(), 5),
        "dark_fraction": round((y < dark).float().mean().item(), 5),
    }


def dark_region_gain(before: Tensor, after: Tensor, dark: float = DARK) -> float:
    """Mean luma increase over the pixels that were dark before: how much the shadows were lifted."""
    mask = luma(before) < dark
    if not mask.any():
        return 0.0
    return (luma(after)[mask] - luma(before)[mask]).mean().item()


def psnr(x: Tensor, ref: Tensor) -> float:
    """PSNR in dB against a reference in [0, 1]."""
    import kornia  # here, not at the top: the app's first page imports this module but needs no metric

    return kornia.metrics.psnr(x.clamp(0, 1), ref.clamp(0, 1), 1.0).item()


def ssim(x: Tensor, ref: Tensor, window: int = 11) -> float:
    """Mean SSIM against a reference in [0, 1]."""
    import kornia

    return kornia.metrics.ssim(x.clamp(0, 1), ref.clamp(0, 1), window).mean().item()


WELLLIT_PROMPTS = ("a well-lit photo", "a backlit photo")


def pair_probability(image_emb: Tensor, positive: Tensor, negative: Tensor, logit_scale: float = 100.0) -> Tensor:
    """Softmax probability of the positive of a (positive, negative) text pair for each image embedding."""
    return losses.prompt_pair_logits(image_emb, positive, negative, logit_scale).softmax(-1)[..., 0]


@torch.no_grad()
def clip_welllit_score(clip, images: Tensor, pair=None, prompts: Sequence[str] = WELLLIT_PROMPTS) -> Tensor:
    """Per image, CLIP's probability (logit scale 100) that it is well-lit rather than backlit.

    ``pair``: a learned prompt pair (``clip_lit.TokenPromptPair`` / ``clip_lit.LatentPromptPair``); without one, the two
    text ``prompts`` (positive first) are used, which needs a CLIP that reads text (a real or world CLIP).
    """
    pos, neg = pair.text_features() if pair is not None else clip.encode_text(list(prompts))
    return pair_probability(clip.encode_image(images), pos, neg)
