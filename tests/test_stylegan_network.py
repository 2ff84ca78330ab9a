"""StyleGAN2 generator: latent paths agree, truncation, noise modes, port-compatible names, resampling math."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.guidance.errors import ParameterError
from clipkit.methods.stylegan.network import Generator, Upsample, default_channels, make_kernel, upfirdn2d

TINY = dict(size=16, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8})


def tiny_generator(seed: int = 0, **overrides) -> Generator:
    """A tiny generator whose noise strengths and biases are non-zero, so every input actually matters."""
    G = Generator(**{**TINY, **overrides}, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("activate.bias") or "to_rgb" in name and name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        G.set_latent_avg(G.mean_latent(512))
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(3, 32, generator=torch.Generator().manual_seed(7))


def test_shapes_and_counts(G, z):
    assert G.n_latent == 2 * 4 - 2 == 6
    assert G.num_layers == 5
    assert G.num_styles == len(G.styles(G.mapping(z))) == 3 * 4 - 4
    names = [n for n, _ in G.style_layers]
    assert names == ["conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0", "convs.2", "convs.3", "to_rgbs.1"]
    assert [c for _, c in G.style_layers] == [16, 16, 16, 16, 16, 16, 8, 8]
    for s, (_, c) in zip(G.styles(G.mapping(z)), G.style_layers):
        assert s.shape == (3, c)
    with torch.no_grad():
        img = G(z)
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()


def test_port_state_dict_keys():
    """Exactly the keys of rosinality's model.Generator(16, 32, 2) (checked against the port's code), in order."""
    G = Generator(**TINY)
    per_conv = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
    up_conv = ["conv.weight", "conv.blur.kernel", "conv.modulation.weight", "conv.modulation.bias", "noise.weight",
               "activate.bias"]  # fmt: skip
    to_rgb = ["bias", "upsample.kernel", "conv.weight", "conv.modulation.weight", "conv.modulation.bias"]
    expected = ["style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input"]
    expected += [f"conv1.{k}" for k in per_conv]
    expected += [f"to_rgb1.{k}" for k in to_rgb if k != "upsample.kernel"]
    expected += [f"convs.{i}.{k}" for i in range(4) for k in (up_conv if i % 2 == 0 else per_conv)]
    expected += [f"to_rgbs.{j}.{k}" for j in range(2) for k in to_rgb]
    expected += [f"noises.noise_{i}" for i in range(5)]
    assert list(G.state_dict()) == expected
    assert "latent_avg" not in G.state_dict()
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert shapes["conv1.conv.weight"] == (1, 16, 16, 3, 3)
    assert shapes["convs.2.conv.weight"] == (1, 8, 16, 3, 3)
    assert shapes["to_rgbs.1.conv.weight"] == (1, 3, 8, 1, 1)
    assert shapes["to_rgb1.bias"] == (1, 3, 1, 1)
    assert shapes["noises.noise_4"] == (1, 1, 16, 16)
    assert shapes["input.input"] == (1, 16, 4, 4)


def test_default_channel_table():
    assert default_channels(1024, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
                                         1024: 32}  # fmt: skip
    assert default_channels(256, 1)[256] == 64
    # NVIDIA's min(channel_base // res, 512) with channel_base = 16384 * multiplier gives the same table.
    for m in (1, 2):
        assert default_channels(1024, m) == {r: min(16384 * m // r, 512) for r in default_channels(1024, m)}


def test_construction_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = Generator(**TINY, seed=3), Generator(**TINY, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = Generator(**TINY, seed=4)
    assert not torch.equal(a.input.input, c.input.input)


def test_every_latent_path_gives_the_same_image(G, z):
    with torch.no_grad():
        ref = G(z=z)
        w = G.mapping(z)
        wplus = G.w_to_wplus(w)
        styles = G.styles(wplus)
        assert torch.equal(G(w=w), ref)
        assert torch.equal(G(wplus=wplus), ref)
        assert torch.equal(G(styles=styles), ref)
        assert torch.equal(G.synthesis(wplus), ref)
        assert torch.equal(G.synthesis(w), ref)  # W is broadcast
        assert torch.equal(G.synthesis(styles=G.styles(w)), ref)


def test_wplus_and_styles_are_per_layer(G, z):
    with torch.no_grad():
        w = G.mapping(z)
        wplus = G.w_to_wplus(w)
        wplus[:, -1] += 1.0  # only the last ToRGB reads the last w
        styles = G.styles(wplus)
        base = G.styles(w)
        changed = [i for i, (a, b) in enumerate(zip(styles, base)) if not torch.equal(a, b)]
        assert changed == [G.num_styles - 1]
        assert not torch.equal(G(wplus=wplus), G(w=w))


def test_truncation(G, z):
    with torch.no_grad():
        w = G.mapping(z)
        assert G.truncate(w, 1.0) is w
        assert torch.equal(G(z=z, truncation=1.0), G(z=z))
        avg_img = G(w=G.latent_avg.expand(3, -1))  # same batch size: grouped convs may round differently per batch
        img0 = G(z=z, truncation=0.0)
        assert torch.equal(img0, avg_img)
        assert torch.equal(img0[1], img0[0]) and torch.equal(img0[2], img0[0])
        half = G.truncate(w, 0.5)
        torch.testing.assert_close(half, G.latent_avg + 0.5 * (w - G.latent_avg))
        cut = G.truncate(w, 0.0, cutoff=2)
        assert cut.shape == (3, G.n_latent, 32)
        assert torch.equal(cut[:, :2], G.latent_avg.expand(3, 2, -1))
        assert torch.equal(cut[:, 2:], G.w_to_wplus(w)[:, 2:])
        assert torch.equal(G(z=z, truncation=0.0, truncation_cutoff=2), G(wplus=cut))


def test_mean_latent_is_reproducible(G):
    a = G.mean_latent(300)
    b = G.mean_latent(300, generator=torch.Generator().manual_seed(0))
    assert a.shape == (32,) and torch.equal(a, b)


def test_noise_modes(G, z):
    state = torch.get_rng_state()
    with torch.no_grad():
        const = G(z, noise_mode="const")
        assert torch.equal(G(z, noise_mode="const"), const)
        none = G(z, noise_mode="none")
        assert torch.equal(G(z, noise_mode="none"), none)
        assert not torch.equal(const, none)
        r1 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        r2 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        r3 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(6))
        assert torch.equal(r1, r2) and not torch.equal(r1, r3)
        unseeded = G(z, noise_mode="random")  # a fresh private generator, still not the global RNG
        assert unseeded.shape == const.shape
        # Explicit noise: the stored buffers reproduce 'const', zeros reproduce 'none'.
        buffers = [getattr(G.noises, f"noise_{i}") for i in range(G.num_layers)]
        assert torch.equal(G(z, noise=buffers), const)
        zeros = [torch.zeros(s) for s in G.noise_shapes(3)]
        torch.testing.assert_close(G(z, noise=zeros), none, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_unfused_modconv_matches_fused(z):
    a, b = tiny_generator(), tiny_generator(fused_modconv=False)
    b.load_state_dict(a.state_dict())
    b.set_latent_avg(a.latent_avg)
    with torch.no_grad():
        torch.testing.assert_close(b(z), a(z), rtol=1e-5, atol=1e-5)
        assert torch.equal(b.set_fused_modconv(True)(z), a(z))


def test_gradients_reach_latents(G, z):
    wplus = G.w_to_wplus(G.mapping(z)).detach().requires_grad_(True)
    G(wplus=wplus).square().mean().backward()
    assert wplus.grad is not None and wplus.grad.abs().sum() > 0
    styles = [s.detach().requires_grad_(True) for s in G.styles(G.mapping(z))]
    G(styles=styles).mean().backward()
    assert all(s.grad is not None for s in styles)


def test_conv_clamp_bounds_every_layer(z):
    G = tiny_generator(conv_clamp=0.25)
    with torch.no_grad():
        img = G(z)
    # Three ToRGB outputs, each clamped to 0.25, summed through gain-1 upsampling: |img| <= 0.75.
    assert img.abs().max() <= 0.75 + 1e-6
    assert G.conv1.activate.clamp == 0.25 and G.to_rgbs[1].clamp == 0.25


def _naive_upfirdn2d(x, k, up, pad):
    """Textbook definition with explicit loops: y[i, j] = sum_{a, b} u[i + a, j + b] * k[kh-1-a, kw-1-b]."""
    c, h, w = x.shape
    u = torch.zeros(c, h * up, w * up, dtype=torch.float64)
    u[:, ::up, ::up] = x
    p0, p1 = pad
    u = F.pad(u, (p0, p1, p0, p1))
    kh, kw = k.shape
    out = torch.zeros(c, u.shape[1] - kh + 1, u.shape[2] - kw + 1, dtype=torch.float64)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j] += u[:, i + a, j + b] * k[kh - 1 - a, kw - 1 - b]
    return out


def test_upfirdn2d_against_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    k = torch.rand(4, 4, generator=g, dtype=torch.float64)  # asymmetric, so a missing flip would show
    for up, pad in ((1, (1, 2)), (2, (2, 1)), (2, (1, 1))):
        torch.testing.assert_close(upfirdn2d(x, k, up=up, pad=pad)[0], _naive_upfirdn2d(x[0], k, up, pad))
    cropped = upfirdn2d(x, k, up=2, pad=(-1, 0))
    torch.testing.assert_close(cropped[0], _naive_upfirdn2d(x[0], k, 2, (0, 0))[:, 1:, 1:])


def test_upsample_keeps_dc_gain_and_kernel_normalisation():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and torch.isclose(k.sum(), torch.tensor(1.0))
    up = Upsample([1, 3, 3, 1])
    assert torch.equal(up.kernel, k * 4) and up.pad == (2, 1)
    out = up(torch.ones(1, 1, 6, 6))
    assert out.shape == (1, 1, 12, 12)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


def test_bad_inputs_are_parameter_errors(G, z):
    with pytest.raises(ParameterError, match="exactly one"):
        G(z=z, w=G.mapping(z))
    with pytest.raises(ParameterError, match="exactly one"):
        G()
    with pytest.raises(ParameterError, match=r"z must have shape \[B, 32\]"):
        G(z=torch.randn(2, 31))
    with pytest.raises(ParameterError, match="wplus"):
        G(wplus=torch.randn(2, 5, 32))
    with pytest.raises(ParameterError, match="truncation"):
        G(styles=G.styles(G.mapping(z)), truncation=0.5)
    with pytest.raises(ParameterError, match="8 tensors"):
        G(styles=G.styles(G.mapping(z))[:-1])
    with pytest.raises(ParameterError, match="noise_mode"):
        G(z, noise_mode="loud")
    with pytest.raises(ParameterError, match="power of 2"):
        Generator(24, 32, 2)
    with pytest.raises(ParameterError, match="latent_avg"):
        G.set_latent_avg(torch.zeros(31))
