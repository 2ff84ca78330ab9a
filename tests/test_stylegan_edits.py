"""StyleCLIP (optimisation, mapper, global directions), StyleMC and StyleGAN-NADA on a tiny generator saved as a file
and the tiny random CLIP (CPU, seeded). The tiny CLIP knows nothing, so these tests check the mechanics: losses go
down, strength 0 redraws the start exactly, edits touch only what they should, artifacts round-trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clipkit import api
from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.prompts import encode_prompt
from clipkit.methods.stylegan import editing
from clipkit.methods.stylegan.checkpoints import save_generator
from clipkit.methods.stylegan.global_directions import (
    GlobalDirectionsSettings,
    relevance,
    stats_path,
    text_direction,
)
from clipkit.methods.stylegan.invert import redraw
from clipkit.methods.stylegan.models import get_generator, to_unit
from clipkit.methods.stylegan.nada import conv_modules
from clipkit.methods.stylegan.network import Generator
from clipkit.methods.stylegan.styleclip_mapper import mapper_from_artifact
from clipkit.methods.stylegan.styleclip_optimise import styleclip_optimise
from clipkit.methods.stylegan.stylemc import StyleMCSettings, clip_cos_loss, finding_styles


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    g = Generator(16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16}, seed=2).eval()
    g.set_latent_avg(g.mean_latent(512))
    with torch.no_grad():  # noise strengths as a trained generator has them (a fresh one starts at 0)
        for m in g.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(0.05)
    return str(save_generator(tmp_path_factory.mktemp("gen") / "tiny.safetensors", g))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Global-direction statistics go to a temporary cache folder, shared by this module's tests."""
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(editing.CACHE_ENV, str(d))
        yield d


@pytest.fixture(scope="module")
def sample(tiny_file):
    return api.run("stylegan", generator=tiny_file, seed=7, count=2, truncation=0.8)


def first_last(history, key, n=5):
    values = [h[key] for h in history]
    return sum(values[:n]) / n, sum(values[-n:]) / n


# --------------------------------------------------------------------------------------------------- shared parts
def test_resumed_synthesis_and_seed_starts_match_the_generator_exactly(tiny_file, sample):
    g = get_generator(tiny_file)
    start = editing.start_latents(g, None, 7, 2, 0.8)
    assert torch.equal(editing.render(g, start), sample.tensors)  # the seeds start where `stylegan` samples
    styles = editing.styles_of(g, start.wplus)
    noise = g.make_noise(1, "const")
    with torch.no_grad():
        whole = g.synthesis(styles=styles, noise=noise)
        for layer in range(len(styles)):
            state = editing.synthesis_state(g, styles, noise, layer)
            assert torch.equal(editing.synthesis_from(g, styles, noise, layer, state), whole)
    names = [n for n, _ in g.style_layers]
    assert [names[i] for i in editing.conv_layers(g)] == ["conv1", "convs.0", "convs.1", "convs.2", "convs.3"]
    assert [names[i] for i in editing.conv_layers(g, 8, 8)] == ["convs.0", "convs.1"]


# --------------------------------------------------------------------------------------------------- optimisation
def test_latent_optimisation_lowers_its_loss_and_returns_a_latent_that_redraws_it(tiny_file, tmp_path):
    r = api.run("styleclip_optimise", clip="tiny", generator=tiny_file, prompt="a red circle", steps=30, seed=3)
    early, late = first_last(r.history, "clip")
    assert late < early - 1e-3
    latent = r.artifacts["latent"]
    assert latent.kind == "latent/wplus" and r.record["settings"]["latent"] == "seeds"
    assert torch.equal(redraw(get_generator(tiny_file), latent), r.tensors)
    saved = Artifact.load(latent.save(tmp_path / "edited.safetensors"), "latent/wplus")
    assert torch.equal(api.run("styleclip_optimise", clip="tiny", generator=tiny_file, latent=saved, steps=0).tensors,
                       r.tensors)  # the edited latent, saved and loaded, starts the next edit where this one ended
    again = api.run("styleclip_optimise", clip="tiny", generator=tiny_file, prompt="a red circle", steps=30, seed=3)
    assert torch.equal(again.tensors, r.tensors)  # reproducible


def test_every_edit_at_strength_zero_redraws_its_start_latent(tiny_file, sample, cache, tmp_path):
    start = sample.tensors
    zero = api.run("styleclip_optimise", clip="tiny", generator=tiny_file, latent=sample, steps=0)
    assert torch.equal(zero.tensors, start)
    # an inverted latent carries its own noise maps: the edit keeps them
    g = get_generator(tiny_file)
    maps = {f"noise_{i}": torch.randn(shape, generator=torch.Generator().manual_seed(i))
            for i, shape in enumerate(g.noise_shapes(1))}
    inverted = Artifact("latent/wplus", {"wplus": sample.artifacts["latent"].tensors["wplus"][:1], **maps},
                        {"noise_mode": "given"})
    path = inverted.save(tmp_path / "inverted.safetensors")
    mapped = api.run("global_directions", clip="tiny", generator=tiny_file, latent=str(path), alpha=0.0,
                     stat_images=2, stat_samples=1000)
    assert torch.equal(mapped.tensors, redraw(g, inverted))
    assert not torch.equal(mapped.tensors, start[:1])
    mc = api.run("stylemc", clip="tiny", generator=tiny_file, latent=sample, change_power=0.0, find_seeds=8)
    assert torch.equal(mc.tensors, start)
    nada = api.run("nada", clip="tiny", generator=tiny_file, latent=sample, steps=2, layers_k=1)
    assert torch.equal(nada.tensors[0::2], start)  # pairs: original, adapted
    with pytest.raises(ParameterError, match="needs"):
        api.run("styleclip_optimise", clip="tiny", generator=tiny_file, latent=Artifact(
            "latent/wplus", {"wplus": torch.zeros(1, 3, 32)}), steps=0)


def test_the_identity_hook_takes_a_network_or_the_clip_early_features(tiny_file):
    class FaceNet(nn.Module):  # a stand-in for a face-identity network: images -> embeddings
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    kw = dict(clip=api.tiny_model(), generator=tiny_file, prompt="a red circle", steps=8, seed=1, progress=False)
    custom = styleclip_optimise(id_lambda=1.0, identity_net=FaceNet(), **kw)
    assert custom.settings["identity"] == "custom"
    ident = [h["identity"] for h in custom.history]
    assert ident[0] < 1e-6 < ident[-1]  # the first step starts at the original (lr 0 on the warm-up's step)
    early = styleclip_optimise(id_lambda=1.0, **kw)
    assert early.settings["identity"] == "clip-early-features" and early.history[-1]["identity"] > 0
    free = styleclip_optimise(id_lambda=0.0, **kw)
    assert "identity" not in free.history[-1] and not torch.equal(free.images, custom.images)


# --------------------------------------------------------------------------------------------------- mapper
def test_mapper_training_lowers_the_loss_and_the_mapper_round_trips(tiny_file, sample, tmp_path):
    g = get_generator(tiny_file)
    z = torch.randn(32, g.style_dim, generator=torch.Generator().manual_seed(9))
    w = g.w_to_wplus(g.truncate(g.mapping(z), 0.7))
    text = encode_prompt(api.tiny_model(), "a red circle")

    def objective(mapper):  # the training loss on a fixed batch: CLIP + 0.8 * latent MSE
        with torch.no_grad():
            edited = mapper.edit(w, 0.1)
            emb = api.tiny_model().encode_image(to_unit(g.synthesis(edited)))
            return float((1 - emb @ text).mean() + 0.8 * (edited - w).pow(2).mean())

    kw = dict(clip="tiny", generator=tiny_file, prompt="a red circle", optimizer="adam", lr=1.0, id_lambda=0.0)
    before = api.run("styleclip_mapper_train", steps=1, **kw).artifacts["mapper"]
    trained = api.run("styleclip_mapper_train", steps=30, **kw)
    art = trained.artifacts["mapper"]
    assert art.kind == "network/styleclip-mapper" and art.meta["groups"] == [["coarse", 0, 4], ["medium", 4, 6]]
    assert objective(mapper_from_artifact(art, g)[0]) < objective(mapper_from_artifact(before, g)[0]) - 0.02
    path = art.save(tmp_path / "mapper.safetensors")
    applied = api.run("styleclip_mapper", generator=tiny_file, mapper=art, latent=sample, alpha=0.1)
    reloaded = api.run("styleclip_mapper", generator=tiny_file, mapper=str(path), latent=sample, alpha=0.1)
    assert torch.equal(applied.tensors, reloaded.tensors) and not torch.equal(applied.tensors, sample.tensors)
    assert torch.equal(redraw(g, applied.artifacts["latent"]), applied.tensors)
    unchanged = api.run("styleclip_mapper", generator=tiny_file, mapper=str(path), latent=sample, alpha=0.0)
    assert torch.equal(unchanged.tensors, sample.tensors)
    with pytest.raises(ParameterError, match="mapper="):
        api.run("styleclip_mapper", generator=tiny_file)


# --------------------------------------------------------------------------------------------------- global directions
def test_global_directions_cache_their_statistics_and_move_only_relevant_channels(tiny_file, cache):
    kw = dict(clip="tiny", generator=tiny_file, neutral="a photo", target="a red circle", stat_images=4,
              stat_samples=2000, seed=4, count=2)
    first = api.run("global_directions", **kw)
    assert first.record["settings"]["stats_cached"] is False
    s = GlobalDirectionsSettings(**{k: v for k, v in kw.items() if k != "clip"})
    path = stats_path(tiny_file, api.tiny_model(), s)
    assert path.is_file() and path.parent == cache / "global-directions"
    stats = Artifact.load(path, "statistics/global-directions")
    g = get_generator(tiny_file)
    rel = relevance(stats, g, text_direction(api.tiny_model(), "a photo", "a red circle"))
    magnitudes = torch.cat(list(rel.values())).abs()
    beta = float(magnitudes.median())
    r = api.run("global_directions", beta=beta, alpha=3.0, **kw)
    assert r.record["settings"]["stats_cached"] is True
    assert torch.equal(api.run("global_directions", **kw).tensors, first.tensors)  # from the file: the same edit
    before = editing.styles_of(g, editing.start_latents(g, None, 4, 2, 0.7).wplus)
    after = [r.artifacts["styles"].tensors[f"s_{i}"] for i in range(len(before))]
    moved = 0
    for i, (b, a) in enumerate(zip(before, after)):
        relevant = rel[i].abs() >= beta if i in rel else torch.zeros(b.shape[1], dtype=torch.bool)
        assert torch.equal(a[:, ~relevant], b[:, ~relevant])  # bit-identical below beta (and every ToRGB)
        assert bool((a[:, relevant] != b[:, relevant]).all())
        moved += int(relevant.sum())
    assert 0 < moved == r.record["settings"]["channels"] < magnitudes.numel()
    assert not torch.equal(r.tensors, first.tensors)
    zero = api.run("global_directions", alpha=0.0, **kw)
    assert torch.equal(zero.tensors, api.run("stylegan", generator=tiny_file, seed=4, count=2).tensors)
    # the direction is an S-space direction: StyleMC applies it at its strength
    applied = api.run("stylemc", generator=tiny_file, direction=r, seed=4, count=2, change_power=3.0)
    assert torch.allclose(applied.tensors, r.tensors, atol=1e-5)


# --------------------------------------------------------------------------------------------------- StyleMC
def test_stylemc_finds_a_direction_that_lowers_its_loss_prunes_and_round_trips(tiny_file, tmp_path):
    kw = dict(clip="tiny", generator=tiny_file, prompt="a red circle", find_seeds=32, batch=2, identity_weight=0.0)
    found = api.run("stylemc", **kw)
    direction = found.artifacts["direction"]
    g = get_generator(tiny_file)
    layers = [direction.tensors[f"s_{i}"][None] for i in range(len(g.style_layers))]
    s = StyleMCSettings(**{k: v for k, v in kw.items() if k != "clip"})
    styles = finding_styles(g, s)
    text = encode_prompt(api.tiny_model(), "a red circle")
    with torch.no_grad():
        before = clip_cos_loss(g, api.tiny_model(), styles, layers, text, power=0.0)
        after = clip_cos_loss(g, api.tiny_model(), styles, layers, text, power=1.0)
    assert after < before
    names = [n for n, _ in g.style_layers]
    edited = {names[i] for i, t in enumerate(layers) if bool((t != 0).any())}
    assert edited and edited <= {"convs.0", "convs.1", "convs.2", "convs.3"}  # 8-64 px convs, no ToRGB
    unpruned = api.run("stylemc", prune=False, **kw).artifacts["direction"]
    pruned = 0
    for k, t in direction.tensors.items():
        same = t == unpruned.tensors[k]
        assert bool((same | (t == 0)).all())  # pruning only zeroes channels
        pruned += int((~same).sum())
    assert pruned == found.record["settings"]["pruned_channels"] > 0
    path = direction.save(tmp_path / "direction.safetensors")
    again = api.run("stylemc", generator=tiny_file, direction=str(path))
    assert torch.equal(again.tensors, found.tensors) and again.record["settings"]["mode"] == "apply"


# --------------------------------------------------------------------------------------------------- NADA
def test_nada_trains_only_chosen_layers_keeps_the_frozen_copy_and_round_trips(tiny_file, sample, tmp_path):
    g = get_generator(tiny_file)
    frozen = {k: v.clone() for k, v in g.state_dict().items()}
    r = api.run("nada", clip="tiny", generator=tiny_file, source="a photo", target="a red circle", steps=24,
                layers_k=1, seed=0, latent=sample)
    assert all(torch.equal(v, frozen[k]) for k, v in g.state_dict().items())  # the frozen generator never moves
    trained = r.record["settings"]["trained_layers"]
    names = [n for n, _ in conv_modules(g)]
    assert 0 < len(trained) < len(names)
    net = r.artifacts["network"]
    assert net.kind == "network/stylegan-nada" and net.tensors
    assert all(k.startswith(tuple(f"{n}." for n in trained)) for k in net.tensors)  # only chosen layers changed
    early, late = first_last(r.history, "directional", 8)
    assert late < early
    assert torch.equal(r.tensors[0::2], sample.tensors) and not torch.equal(r.tensors[1::2], sample.tensors)
    path = net.save(tmp_path / "nada.safetensors")
    applied = api.run("nada", generator=tiny_file, network=str(path), latent=sample)
    assert torch.equal(applied.tensors, r.tensors) and applied.record["settings"]["mode"] == "apply"
