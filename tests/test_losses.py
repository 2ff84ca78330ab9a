"""Each loss on hand-made embeddings where the answer is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.guidance import losses


def unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def test_directional_loss_is_zero_for_parallel_and_two_for_opposite():
    src_t, tgt_t = unit(1, 0, 0), unit(0, 1, 0)
    src_i = unit(0, 0, 1)[None]
    along = src_i + 0.3 * (tgt_t - src_t)
    against = src_i - 0.3 * (tgt_t - src_t)
    assert losses.directional_loss(src_i, along, src_t, tgt_t).item() == pytest.approx(0, abs=1e-6)
    assert losses.directional_loss(src_i, against, src_t, tgt_t).item() == pytest.approx(2, abs=1e-6)
    orthogonal = src_i + 0.3 * unit(0, 0, 1)[None]
    assert losses.directional_loss(src_i, orthogonal, src_t, tgt_t).item() == pytest.approx(1, abs=1e-6)


def test_spherical_distance_known_values():
    a, b = unit(1, 0), unit(0, 1)
    assert losses.spherical_distance(a[None], a[None]).item() == pytest.approx(0, abs=1e-6)
    # geodesic angle pi/2 -> 2 * (angle / 2)^2
    assert losses.spherical_distance(a[None], b[None]).item() == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)
    assert losses.spherical_distance(a[None], -a[None]).item() == pytest.approx(2 * (math.pi / 2) ** 2, rel=1e-5)


def test_global_loss_negative_weight_rewards_distance():
    text = torch.stack([unit(1, 0), unit(0, 1)])
    near_first = unit(1, 0.1)[None]
    near_second = unit(0.1, 1)[None]
    w = torch.tensor([1.0, -1.0])
    assert losses.global_loss(near_first, text, w) < losses.global_loss(near_second, text, w)
    assert losses.global_loss(near_first, text[:1]) < losses.global_loss(near_second, text[:1])


def test_residual_vector_is_normalised_difference_of_means():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    r = losses.residual_vector(a, b)
    expected = F.normalize(b.mean(0), dim=0) - F.normalize(a.mean(0), dim=0)
    assert torch.allclose(r, expected / expected.norm(), atol=1e-6)
    assert torch.allclose(losses.residual_vector(a, b, normalize=False), expected, atol=1e-6)


def test_residual_vector_loss_zero_on_direction():
    r = unit(1, 2, 3)
    assert losses.residual_vector_loss(r[None], r, threshold=1.0).item() == pytest.approx(0, abs=1e-6)
    assert losses.residual_vector_loss(-r[None], r, threshold=1.0).item() == pytest.approx(4, abs=1e-5)


def test_patch_loss_rejects_patches_below_threshold():
    src_t, tgt_t = unit(1, 0, 0), unit(0, 1, 0)
    src = unit(0, 0, 1)
    good = src + 0.5 * (tgt_t - src_t)          # per-patch loss 0 -> rejected
    bad = src - 0.5 * (tgt_t - src_t)           # per-patch loss 2 -> kept
    patches = torch.stack([good, bad, good, good])
    loss, kept = losses.patch_directional_loss(src, patches, src_t, tgt_t, threshold=0.7)
    assert kept.tolist() == [False, True, False, False]
    assert loss.item() == pytest.approx(2 / 4, abs=1e-5)
    loss_all, kept_all = losses.patch_directional_loss(src, patches, src_t, tgt_t, threshold=0.0)
    assert kept_all.all() and loss_all.item() == pytest.approx(2 / 4, abs=1e-5)


def test_prompt_pair_loss_prefers_positive():
    pos, neg = unit(1, 0), unit(0, 1)
    like_pos, like_neg = unit(1, 0.05)[None], unit(0.05, 1)[None]
    assert losses.prompt_pair_loss(like_pos, pos, neg).item() < 1e-3
    assert losses.prompt_pair_loss(like_neg, pos, neg).item() > 10
    # label 1 = the image should score as the negative prompt
    assert losses.prompt_pair_loss(like_neg, pos, neg, labels=1).item() < 1e-3


def test_tv_and_latent_l2():
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert losses.tv_loss(flat).item() == 0
    noisy = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert losses.tv_loss(noisy) > 0
    mask = torch.zeros(1, 1, 8, 8)
    assert losses.tv_loss(noisy, mask).item() == 0
    w = torch.zeros(2, 4)
    assert losses.latent_l2(w + 1, w).item() == pytest.approx(4)
