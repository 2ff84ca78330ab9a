"""The world StyleGAN2: discriminator (port names, minibatch stddev), trainer (runs, exact resume, the written
model loads back), the evaluation's pieces (Fréchet distance, judge scores). Tiny configs, CPU, a few seconds."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from clipkit.methods.stylegan.checkpoints import load_generator, read_safetensors_metadata
from clipkit.methods.stylegan.discriminator import Discriminator, minibatch_stddev
from clipkit.methods.stylegan.network import Generator
from clipkit.world import eval_stylegan, train_stylegan
from clipkit.world.scene import COLOURS, SHAPES

TINY_D = dict(size=16, channels={4: 16, 8: 16, 16: 8})
TINY_ARGS = ["--size", "16", "--style-dim", "32", "--channels", "4:16,8:16,16:8", "--batch", "4",
             "--r1-every", "2", "--every", "1", "--log-every", "1", "--sample-every", "0", "--latent-avg-n", "64",
             "--no-progress", "--augment", "translation,cutout"]


def port_discriminator_keys(size: int) -> list[str]:
    """The state-dict keys of rosinality's model.Discriminator(size), in order, written out from its structure:
    convs = Sequential(ConvLayer(3, ch, 1), ResBlock ... ); ConvLayer = Sequential([Blur], EqualConv2d,
    [FusedLeakyReLU]); ResBlock = conv1, conv2 (downsampling), skip (downsampling, no bias, no activation)."""
    keys = ["convs.0.0.weight", "convs.0.1.bias"]
    n_blocks = size.bit_length() - 3  # log2(size) - 2
    for j in range(1, n_blocks + 1):
        keys += [f"convs.{j}.conv1.0.weight", f"convs.{j}.conv1.1.bias", f"convs.{j}.conv2.0.kernel",
                 f"convs.{j}.conv2.1.weight", f"convs.{j}.conv2.2.bias", f"convs.{j}.skip.0.kernel",
                 f"convs.{j}.skip.1.weight"]
    keys += ["final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
             "final_linear.1.weight", "final_linear.1.bias"]
    return keys


def test_discriminator_port_names_and_strict_load():
    D = Discriminator(**TINY_D)
    sd = D.state_dict()
    assert list(sd) == port_discriminator_keys(16)
    assert sd["convs.1.conv2.1.weight"].shape == (16, 8, 3, 3)  # the 16 px block: ch[16] = 8 -> ch[8] = 16
    assert sd["final_conv.0.weight"].shape == (16, 16 + 1, 3, 3)  # + the stddev map
    assert sd["final_linear.0.weight"].shape == (16, 16 * 4 * 4)
    # a "port" state dict: the same names, other values -> loads strictly and changes the output
    g = torch.Generator().manual_seed(3)
    port = {k: torch.randn(v.shape, generator=g) if not k.endswith("kernel") else v.clone() for k, v in sd.items()}
    D2 = Discriminator(**TINY_D, seed=5)
    D2.load_state_dict(port, strict=True)
    x = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1  # 6: not a multiple of the stddev group (4)
    out = D2(x)
    assert out.shape == (6, 1) and torch.isfinite(out).all()
    assert not torch.allclose(out, D(x))
    with pytest.raises(RuntimeError):
        D2.load_state_dict({**port, "convs.0.0.extra": torch.zeros(1)}, strict=True)


def test_discriminator_default_table_and_blur():
    D = Discriminator(64, channel_multiplier=1)
    assert D.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256}
    k = D.state_dict()["convs.1.conv2.0.kernel"]
    assert k.shape == (4, 4) and abs(float(k.sum()) - 1) < 1e-6  # [1, 3, 3, 1] outer product, unit DC gain


def test_minibatch_stddev_matches_the_definition():
    x = torch.randn(8, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 6, 4, 4) and torch.equal(y[:, :5], x)
    # sample i is in group i % 2 (B / G = 2): members i, i + 2, i + 4, i + 6
    for i in range(8):
        members = x[i % 2::2]
        want = (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[i, 5], want.expand(4, 4), atol=1e-6)


def test_diff_augment_is_differentiable_and_seeded():
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    policy = ("translation", "cutout")
    a = train_stylegan.diff_augment(x, policy, torch.Generator().manual_seed(1))
    b = train_stylegan.diff_augment(x, policy, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a == 0).float().mean() > 0.15  # the cut-out quarter (and the translated-in border) is zero
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _g_ema(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("g_ema.")}


def test_training_runs_resumes_exactly_and_writes_a_loadable_model(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    done = train_stylegan.main(TINY_ARGS + ["--out", str(a), "--model-out", str(a / "m.safetensors"),
                                            "--steps", "4"])
    assert done["steps"] == 4 and (a / "done.json").exists()
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in log)
    assert "r1" in log[0] and "r1" in log[2] and "r1" not in log[1]  # lazy R1: steps 0 and 2
    train_stylegan.main(TINY_ARGS + ["--out", str(b), "--model-out", str(b / "m.safetensors"), "--steps", "2"])
    with pytest.raises(SystemExit):  # an existing run is never overwritten without --resume
        train_stylegan.main(TINY_ARGS + ["--out", str(b), "--model-out", str(b / "m.safetensors"), "--steps", "4"])
    train_stylegan.main(TINY_ARGS + ["--out", str(b), "--model-out", str(b / "m.safetensors"), "--steps", "4",
                                     "--resume"])
    ga, gb = _g_ema(a / "last.safetensors"), _g_ema(b / "last.safetensors")
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    with pytest.raises(SystemExit):  # another architecture refuses to resume
        train_stylegan.main(TINY_ARGS + ["--out", str(b), "--model-out", str(b / "m.safetensors"), "--steps", "5",
                                         "--resume", "--lr", "0.001"])

    # the written model: fp16, the project's format, loads back and draws what G_ema draws
    path = a / "m.safetensors"
    meta = read_safetensors_metadata(path)
    assert meta["format"] == "clipkit-stylegan2" and meta["dtype"] == "float16" and meta["steps"] == "4"
    assert load_file(str(path))["conv1.conv.weight"].dtype == torch.float16
    G = load_generator(path)
    assert G.size == 16 and G.n_mlp == 2 and not getattr(G, "latent_avg_estimated", False)
    assert G.latent_avg.abs().sum() > 0
    ref = Generator(**json.loads(meta["config"]))
    ref.load_state_dict({k[len("g_ema."):]: v for k, v in ga.items()})
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img, want = G(z), ref(z)
    assert img.shape == (2, 3, 16, 16)
    assert (img - want).abs().max() < 0.02  # fp16 weights
    with torch.no_grad():
        assert torch.equal(G(z), img)  # same latent, same image
    with torch.no_grad():  # truncation centre: the mean of mapped z (64 here)
        assert torch.allclose(G.latent_avg, ref.mean_latent(64, torch.Generator().manual_seed(0)), atol=1e-2)


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g, dtype=torch.float64)
    assert abs(eval_stylegan.frechet_distance(x, x)) < 1e-8
    y = torch.randn(400, 8, generator=g, dtype=torch.float64) * 2 + 1
    d = eval_stylegan.frechet_distance(x, y)
    # the closed form for N(0, I) against N(1, 4I) in 8 dimensions is 8 * 1 + 8 * (1 + 4 - 2 * 2) = 16
    assert 12 < d < 20
    assert eval_stylegan.frechet_distance(x, x + 0.1) == pytest.approx(8 * 0.01, rel=1e-6)


def test_one_object_scores_and_renders():
    from clipkit.guidance.clip import tiny_clip

    images = eval_stylegan.renders(6, seed=0)
    assert images.shape == (6, 3, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, eval_stylegan.renders(6, seed=0))
    assert not torch.equal(images, eval_stylegan.renders(6, seed=0, tag="other"))
    res = eval_stylegan.one_object_scores(tiny_clip(), images)
    assert res["n"] == 6 and 0 <= res["pass"] <= 1
    assert list(res["shapes"]) == list(SHAPES) and list(res["colours"]) == list(COLOURS)
    assert sum(res["shapes"].values()) == sum(res["colours"].values()) == 6
    assert res["every_colour"] is False  # 6 images cannot show 11 colours
