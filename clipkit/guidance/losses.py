"""CLIP guidance losses as small pure functions on embeddings and images.

Embeddings are unit-norm (…, D). Every function works on batches; where it makes sense an optional mask
(B, 1, H, W) in [0, 1] limits where a pixel loss looks (CLIP-space losses are localised by
`guidance.regions` before encoding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared geodesic distance on the unit sphere between every x (…, D) and y (N, D) -> (…, N).

    Better behaved than 1 - cos for guidance: its gradient does not vanish when the two are far apart.
    """
    x = F.normalize(x, dim=-1).unsqueeze(-2)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def global_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted spherical distance from images (…, D) to prompts (N, D); negative weights push away."""
    d = spherical_distance(image_emb, text_emb).reshape(-1, text_emb.shape[0]).mean(0)
    w = torch.ones_like(d) if weights is None else weights.to(d)
    return (d * w).sum()


def direction(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unit direction from source to target embeddings (broadcasting)."""
    return F.normalize(target - source, dim=-1)


def directional_loss(
    source_image: torch.Tensor, image: torch.Tensor, source_text: torch.Tensor, target_text: torch.Tensor
) -> torch.Tensor:
    """StyleGAN-NADA: 1 - cos(ΔI, ΔT); the image must move the way the text moves (0 = parallel, 2 = opposite)."""
    d_img = image - source_image
    d_txt = (target_text - source_text).expand_as(d_img)
    return (1 - F.cosine_similarity(d_img, d_txt, dim=-1)).mean()


def patch_directional_loss(
    source_image: torch.Tensor,
    patches: torch.Tensor,
    source_text: torch.Tensor,
    target_text: torch.Tensor,
    threshold: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIPstyler's patch loss: per-patch directional loss, patches already below `threshold` rejected (0).

    Rejection stops easy patches from dominating; returns (loss, mask of kept patches).
    """
    d_img = patches - source_image.expand_as(patches)
    d_txt = (target_text - source_text).expand_as(d_img)
    per_patch = 1 - F.cosine_similarity(d_img, d_txt, dim=-1)
    kept = per_patch >= threshold
    return torch.where(kept, per_patch, torch.zeros_like(per_patch)).mean(), kept


def residual_vector(set_a: torch.Tensor, set_b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """RAVE's guidance direction: normalised mean embedding of set B minus that of set A (A backlit, B well-lit).

    Each mean is put back on the unit sphere first, as RAVE does, so sets of different spread count alike.
    """
    mean_a = F.normalize(set_a.reshape(-1, set_a.shape[-1]).mean(0), dim=-1)
    mean_b = F.normalize(set_b.reshape(-1, set_b.shape[-1]).mean(0), dim=-1)
    r = mean_b - mean_a
    return F.normalize(r, dim=-1) if normalize else r


def residual_vector_loss(image_emb: torch.Tensor, r: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """RAVE: (cos(E(Î), r) - threshold)^2 averaged over the batch; pulls images toward the direction r."""
    cos = F.cosine_similarity(image_emb, r.expand_as(image_emb), dim=-1)
    return (cos - threshold).pow(2).mean()


def prompt_pair_logits(image_emb: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, logit_scale=100.0):
    """Logits (…, 2) of [positive, negative] prompt similarity, as CLIP-LIT scores images."""
    pair = F.normalize(torch.stack([positive, negative], dim=-2), dim=-1)
    return logit_scale * image_emb @ pair.transpose(-1, -2)


def prompt_pair_loss(
    image_emb: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    labels: torch.Tensor | int = 0,
    logit_scale: float = 100.0,
) -> torch.Tensor:
    """CLIP-LIT: cross-entropy of the softmax over (positive, negative) similarities; label 0 = positive."""
    logits = prompt_pair_logits(image_emb, positive, negative, logit_scale).reshape(-1, 2)
    if isinstance(labels, int):
        labels = torch.full((logits.shape[0],), labels, device=logits.device, dtype=torch.long)
    return F.cross_entropy(logits, labels.reshape(-1).long())


def tv_loss(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Total variation (mean squared neighbour difference): discourages high-frequency noise."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).pow(2)
    dy = (images[..., 1:, :] - images[..., :-1, :]).pow(2)
    if mask is not None:
        dx = dx * mask[..., :, 1:]
        dy = dy * mask[..., 1:, :]
    return dx.mean() + dy.mean()


def latent_l2(latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's ||w - w_s||^2 per sample, averaged: keeps an edit near the latent it started from."""
    return (latent - reference).pow(2).flatten(1).sum(1).mean()
