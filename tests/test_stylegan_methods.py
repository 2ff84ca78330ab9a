"""StyleGAN sampling and inversion through the API, on a tiny generator saved as a file (CPU, seeded)."""

from __future__ import annotations

import pytest
import torch

from clipkit import api
from clipkit.guidance.errors import WeightsNotFoundError
from clipkit.methods.stylegan.checkpoints import save_generator
from clipkit.methods.stylegan.invert import noise_regularization, psnr, redraw
from clipkit.methods.stylegan.models import get_generator
from clipkit.methods.stylegan.network import Generator


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    g = Generator(16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16}, seed=2).eval()
    g.set_latent_avg(g.mean_latent(512))
    return str(save_generator(tmp_path_factory.mktemp("gen") / "tiny.safetensors", g))


def test_each_image_of_a_grid_re_runs_alone_and_carries_its_latent(tiny_file):
    grid = api.run("stylegan", generator=tiny_file, seed=5, count=3, truncation=0.8)
    assert grid.tensors.shape == (3, 3, 16, 16) and grid.record["settings"]["seeds"] == [5, 6, 7]
    for i in range(3):
        alone = api.run("stylegan", generator=tiny_file, seed=5 + i, count=1, truncation=0.8)
        assert torch.equal(alone.tensors[0], grid.tensors[i])
    latent = grid.artifacts["latent"]
    g = get_generator(tiny_file)
    assert latent.kind == "latent/wplus" and latent.tensors["wplus"].shape == (3, g.n_latent, 32)
    assert torch.equal(redraw(g, latent), grid.tensors)
    average = api.run("stylegan", generator=tiny_file, seed=9, count=2, truncation=0.0).tensors
    assert torch.equal(average[0], average[1])  # psi 0: every seed gives the average picture
    assert not torch.equal(grid.tensors[0], grid.tensors[1])


def test_inversion_recovers_a_picture_the_generator_made(tiny_file):
    target = api.run("stylegan", generator=tiny_file, seed=11, count=1, truncation=0.9)
    start = api.run("stylegan", generator=tiny_file, seed=0, count=1, truncation=0.0).tensors  # the average
    r = api.run("invert", clip="tiny", image=target.tensors, generator=tiny_file, steps=120, seed=0,
                perceptual_weight=0.05)
    losses = [h["pixel"] for h in r.history]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10  # the fit improves
    assert r.record["settings"]["psnr"] > psnr(start, target.tensors) + 6  # far closer than the starting point
    latent = r.artifacts["latent"]
    assert torch.equal(redraw(get_generator(tiny_file), latent), r.tensors)  # the latent redraws the result
    again = api.run("invert", clip="tiny", image=target.tensors, generator=tiny_file, steps=120, seed=0,
                    perceptual_weight=0.05)
    assert torch.equal(again.tensors, r.tensors)  # same settings and seed: the same latent


def test_noise_regularization_is_zero_for_white_noise_and_large_for_structure():
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(1, 1, 64, 64, generator=g)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=64, mode="bilinear")]
    assert noise_regularization(white) < 1e-3 < noise_regularization(smooth)


def test_a_missing_generator_is_named_with_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="clipkit convert stylegan"):
        api.run("stylegan", generator=str(tmp_path / "ffhq.pkl"))
    m = api.get_method("stylegan")
    assert "world-stylegan2" in (m.missing(m.defaults()) or "world-stylegan2 present")
