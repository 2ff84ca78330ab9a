"""The diffusion back-end's plumbing: model folders, the guided sampler's contract, the trainer's exact resume.

Tiny random models, built here with fixed seeds; what the shipped world model draws is tested in
test_semantics.py, judged by a CLIP that did not guide.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from clipkit import api
from clipkit.guidance.errors import CheckpointError, ModelNameError, ParameterError, PromptError, WeightsNotFoundError
from clipkit.guidance.runs import CancelToken
from clipkit.methods.diffusion.clip_guided_diffusion import DiffusionSettings, clip_guided_diffusion
from clipkit.methods.diffusion.denoiser import LatentDenoiser
from clipkit.methods.diffusion.img2img import Img2ImgSettings, img2img
from clipkit.methods.diffusion.latent_model import (
    LatentModel,
    load_latent_model,
    packaged_latent_models,
    resolve_latent_model,
    save_latent_model,
)


def tiny_parts(seed: int = 0):
    """A 16 px VAE with a 4 x 8 x 8 latent, a small denoiser and the world model's schedule."""
    from diffusers import AutoencoderKL, DDPMScheduler

    torch.manual_seed(seed)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        sample_size=16)
    net = LatentDenoiser(latent_channels=4, latent_size=8, width=32, depth=1)
    with torch.no_grad():  # the zero-initialised blocks would make every denoiser the same
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return vae, net, DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldm") / "tiny-ldm"
    save_latent_model(folder, *tiny_parts())
    return folder


@pytest.fixture(scope="module")
def tiny_ldm(tiny_folder) -> LatentModel:
    return load_latent_model(tiny_folder, device="cpu")


FAST = {"steps": 4, "recurrence": 2, "cutouts": 2, "size": 32}


def test_world_model_ships_and_loads_by_name():
    assert "world-ldm" in packaged_latent_models()
    m = load_latent_model("world-ldm", device="cpu")
    assert m.latent_shape == (8, 4, 4) and m.image_size == 32
    with torch.no_grad():
        image = m.decode(torch.zeros(1, 8, 4, 4), size=64)
    assert image.shape == (1, 3, 64, 64) and 0 <= float(image.min()) <= float(image.max()) <= 1


def test_saved_folder_reloads_the_same_model(tiny_folder):
    vae, net, _ = tiny_parts()
    m = load_latent_model(tiny_folder, device="cpu")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(500)
    with torch.no_grad():  # weights are stored in fp16: equal up to that rounding
        assert torch.allclose(m.denoiser(x, t), net(x, t), atol=2e-2)
        assert torch.allclose(m.vae.decode(x).sample, vae.decode(x).sample, atol=2e-2)
    assert m.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    files = {p.name for p in tiny_folder.rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)


def test_missing_or_damaged_models_are_named(tmp_path, tiny_folder):
    with pytest.raises(ModelNameError, match="world-ldm"):
        resolve_latent_model("no-such-model")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        resolve_latent_model(str(tmp_path / "gone" / "model"))
    with pytest.raises(WeightsNotFoundError, match="local Hugging Face cache"):
        resolve_latent_model("someone/not-cached-ldm")
    (tmp_path / "half").mkdir()
    with pytest.raises(WeightsNotFoundError, match="needs the subfolders"):
        resolve_latent_model(tmp_path / "half")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / "denoiser" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken"):
        load_latent_model(broken, device="cpu")


def test_same_seed_same_images_and_the_record_reproduces_them(tiny_ldm):
    clip = api.tiny_model()
    a = clip_guided_diffusion(clip=clip, latent_model=tiny_ldm, seed=3, batch=2, progress=False, **FAST)
    b = clip_guided_diffusion(clip=clip, latent_model=tiny_ldm, seed=3, batch=2, progress=False, **FAST)
    c = clip_guided_diffusion(clip=clip, latent_model=tiny_ldm, seed=4, batch=2, progress=False, **FAST)
    assert a.images.shape == (2, 3, 32, 32) and torch.equal(a.images, b.images)
    assert not torch.allclose(a.images, c.images)
    assert not torch.allclose(a.images[0], a.images[1])  # the batch's samples are not copies
    record = dict(a.settings)
    assert record["method"] == "diffusion" and record["clip"] == clip.name
    settings = {k: v for k, v in record.items() if k in DiffusionSettings.__dataclass_fields__}
    again = clip_guided_diffusion(DiffusionSettings(**settings), clip=clip, latent_model=tiny_ldm, progress=False)
    assert torch.equal(again.images, a.images)


def test_each_image_of_a_batch_reruns_alone_from_its_saved_settings(tiny_folder, tmp_path):
    """Image i of a batch draws only from seed + i (start noise, views, re-noising): saved alone, its PNG's
    settings give it back as a batch of one, to float precision (batched convolutions round a little otherwise)."""
    clip = api.tiny_model()
    batch = api.run("diffusion", clip=clip, diffusion_model=str(tiny_folder), seed=7, batch=3, eta=0.5, **FAST)
    assert batch.settings["seeds"] == [7, 8, 9]
    path = batch.save(tmp_path / "second.png", index=1)
    again = api.run(settings=path, clip=clip)
    assert again.tensors.shape[0] == 1 and again.settings["seed"] == 8
    torch.testing.assert_close(again.tensors[0], batch.tensors[1], atol=1e-4, rtol=0)
    assert (again.tensors[0] - batch.tensors[0]).abs().max() > 1e-2  # not just any image of the batch


def test_guidance_changes_the_sample_and_scale_zero_needs_no_clip(tiny_ldm):
    plain = clip_guided_diffusion(latent_model=tiny_ldm, guidance_scale=0.0, prompt="", seed=1, progress=False,
                                  **FAST)
    assert plain.settings["clip"] is None and len(plain.history) == FAST["steps"]
    guided = clip_guided_diffusion(clip=api.tiny_model(), latent_model=tiny_ldm, guidance_scale=2.0, seed=1,
                                   progress=False, **FAST)
    assert (guided.images - plain.images).abs().max() > 1e-3
    for form in ("eps", "x0"):
        r = clip_guided_diffusion(clip=api.tiny_model(), latent_model=tiny_ldm, guidance=form, seed=1,
                                  progress=False, **FAST)
        assert torch.isfinite(r.images).all() and "prompt" in r.history[-1]


def test_progress_reports_every_step_and_cancel_keeps_a_clean_partial(tiny_ldm):
    seen, token = [], CancelToken()

    def on_step(info):
        seen.append((info.step, info.total, info.preview is not None))
        if info.step == 2:
            token.cancel()

    r = clip_guided_diffusion(clip=api.tiny_model(), latent_model=tiny_ldm, callback=on_step, cancel=token,
                              progress=False, batch=1, **{**FAST, "steps": 6})
    # step 0: the picture before the first guided step (the start's text-conditioned prediction), then each step
    assert r.cancelled and len(r.history) == 2 and [s[:2] for s in seen] == [(0, 6), (1, 6), (2, 6)]
    assert seen[0][2] and seen[1][2]  # the start and the first step send previews
    assert r.images.shape == (1, 3, 32, 32) and torch.isfinite(r.images).all()


@pytest.mark.parametrize("bad, message", [
    ({"recurrence": 0}, "recurrence=0"), ({"guidance": "both"}, "guidance='both'"), ({"steps": 0}, "steps=0"),
    ({"guidance_scale": -1.0}, "guidance_scale=-1.0"), ({"eta": 2.0}, "eta=2.0"), ({"size": 4}, "size=4"),
    ({"diffusion_model": " "}, "diffusion_model"),
])
def test_absurd_settings_are_named(bad, message):
    with pytest.raises(ParameterError, match=message):
        DiffusionSettings(**bad).validate()


def test_empty_prompt_is_refused_only_when_guided():
    with pytest.raises(PromptError):
        DiffusionSettings(prompt="  ").validate()
    DiffusionSettings(prompt="", guidance_scale=0.0).validate()


def test_method_is_registered_for_every_surface():
    m = api.get_method("diffusion")
    assert m.family == api.get_method("generate").family == "Generate"
    assert list(api.methods())[0] == "diffusion"  # the app's first tab, so the default run draws with the prior
    assert m.missing(test_models=True) is None
    assert "no-such-model" in m.missing(DiffusionSettings(diffusion_model="no-such-model"), test_models=True)
    presets = [p for p in api.list_presets() if p.method == "diffusion"]
    assert {"diffusion-quick", "diffusion-unguided"} <= {p.name for p in presets}


def test_cli_writes_each_image_of_a_batch_with_its_settings(tmp_path, tiny_folder, capsys):
    from clipkit.cli import main
    from clipkit.guidance.images import read_settings

    out = tmp_path / "d.png"
    rc = main(["run", "diffusion", "--prompt", "a red circle", "--steps", "2", "--recurrence", "1", "--batch", "2",
               "--size", "32", "--seed", "5", "--diffusion-model", str(tiny_folder), "--model", "tiny-clip",
               "--clip-weights", "random", "--out", str(out)])
    assert rc == 0
    for i in (1, 2):  # each image's own seed (5 + i - 1) and a batch of one: its settings re-run it alone
        s = read_settings(tmp_path / f"d-{i}.png")["settings"]
        assert (s["method"], s["seed"], s["batch"], s["diffusion_model"]) == ("diffusion", 4 + i, 1, str(tiny_folder))
        assert s["picked"] == [i - 1, 2]
    rc = main(["run", "diffusion", "--recurrence", "0", "--diffusion-model", str(tiny_folder), "--out", str(out)])
    assert rc == 2 and "recurrence=0" in capsys.readouterr().err


def test_text_conditioned_denoiser_reads_its_text_and_a_null_for_none():
    net = LatentDenoiser(latent_channels=4, latent_size=8, width=32, depth=1, cond_dim=6, cond_clip="tiny-clip")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
        x, t, c = torch.randn(3, 4, 8, 8), torch.tensor(400), torch.randn(3, 6)
        texted, none = net(x, t, c), net(x, t)
        assert (texted - none).abs().max() > 1e-4
        keep = torch.tensor([True, False, True])
        mixed = net(x, t, c, keep)  # caption dropout: the dropped row is the null's
        assert torch.allclose(mixed[1], none[1]) and torch.allclose(mixed[0], texted[0])
    with pytest.raises(ValueError, match="cond_clip"):
        LatentDenoiser(cond_dim=6)
    with pytest.raises(ValueError, match="without text"):
        tiny_parts()[1](x, t, c)


@pytest.fixture(scope="module")
def tiny_text_ldm(tmp_path_factory):
    vae, _, sched = tiny_parts()
    clip = api.tiny_model()
    torch.manual_seed(1)
    net = LatentDenoiser(latent_channels=4, latent_size=8, width=32, depth=1, cond_dim=clip.embed_dim,
                         cond_clip=clip.name)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    folder = save_latent_model(tmp_path_factory.mktemp("ldm") / "tiny-text-ldm", vae, net, sched)
    return load_latent_model(folder, device="cpu")


def test_classifier_free_guidance_follows_the_prompt_and_zero_ignores_it(tiny_text_ldm):
    clip, run = api.tiny_model(), dict(guidance_scale=0.0, seed=2, batch=2, progress=False, **FAST)
    assert tiny_text_ldm.denoiser.conditioned and tiny_text_ldm.denoiser.config.cond_clip == clip.name
    red = clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt="a red circle", cfg_scale=3.0, **run)
    blue = clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt="a blue square", cfg_scale=3.0,
                                 **run)
    assert red.settings["text_conditioned"] and (red.images - blue.images).abs().max() > 1e-3
    again = clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt="a red circle", cfg_scale=3.0, **run)
    assert torch.equal(red.images, again.images)
    off = [clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt=p, cfg_scale=0.0, **run)
           for p in ("a red circle", "a blue square")]
    assert torch.equal(off[0].images, off[1].images) and not off[0].settings["text_conditioned"]
    with pytest.raises(PromptError):
        clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt=" ", cfg_scale=3.0, **run)
    with pytest.raises(ParameterError, match="no positive part"):
        clip_guided_diffusion(clip=clip, latent_model=tiny_text_ldm, prompt="red:-1", cfg_scale=3.0, **run)
    with pytest.raises(ParameterError, match="cfg_scale=-1"):
        DiffusionSettings(cfg_scale=-1.0).validate()


def test_trainer_makes_a_text_conditioned_prior(tmp_path):
    import clipkit.world.train_ldm as train

    train.main(["--out", str(tmp_path / "run"), "--model-out", str(tmp_path / "model"), "--vae-steps", "2",
                "--vae-batch", "4", "--prior-steps", "3", "--prior-batch", "8", "--scenes", "24", "--every", "2",
                "--threads", "1", "--condition", "tiny-clip", "--condition-weights", "random"])
    m = load_latent_model(tmp_path / "model", device="cpu")
    assert m.denoiser.conditioned and m.denoiser.config.cond_clip == "tiny-clip"
    assert m.denoiser.config.cond_dim == api.tiny_model().embed_dim


def test_trainer_resumes_exactly(tmp_path, monkeypatch):
    """An interrupted run, resumed, ends with the same weights as one that ran straight through."""
    import clipkit.world.train_ldm as train

    args = ["--vae-steps", "3", "--vae-batch", "4", "--prior-steps", "4", "--prior-batch", "8", "--scenes", "40",
            "--every", "2", "--threads", "1"]
    train.main(["--out", str(tmp_path / "a"), "--model-out", str(tmp_path / "a-model"), *args])
    real, calls = train._checkpoint, []

    def interrupt(path, *a, **k):
        real(path, *a, **k)
        calls.append(path.name)
        if path.name == "prior-last.safetensors":
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.main(["--out", str(tmp_path / "b"), "--model-out", str(tmp_path / "b-model"), *args])
    assert not (tmp_path / "b-model").exists()
    monkeypatch.setattr(train, "_checkpoint", real)
    train.main(["--out", str(tmp_path / "b"), "--model-out", str(tmp_path / "b-model"), "--resume", *args])
    for part in ("vae", "denoiser"):
        a = load_file(str(tmp_path / "a-model" / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "b-model" / part / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    done = json.loads((tmp_path / "b" / "done.json").read_text())
    assert done["processes"] == 1 and load_latent_model(tmp_path / "b-model", device="cpu").latent_shape == (8, 4, 4)


def test_trainer_runs_as_two_data_parallel_processes(tmp_path):
    """torchrun with 2 CPU processes: one run (accelerate's DDP over gloo), one model folder written."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "clipkit.world.train_ldm", "--out", str(tmp_path / "run"), "--model-out", str(tmp_path / "model"),
           "--vae-steps", "2", "--vae-batch", "4", "--prior-steps", "3", "--prior-batch", "8", "--scenes", "24",
           "--every", "2", "--threads", "1"]
    done = subprocess.run(cmd, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "done.json").read_text())["processes"] == 2
    assert load_latent_model(tmp_path / "model", device="cpu").latent_shape == (8, 4, 4)


# ---------------------------------------------------------------- img2img (SDEdit, Blended Latent Diffusion)

I2I = {"steps": 6, "recurrence": 1, "cutouts": 2, "prompt": "a blue circle"}


def _picture() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 24, 40, generator=g)  # not the VAE's size, not square


def test_img2img_same_seed_same_picture_at_the_input_size_and_takes_rerun_alone(tiny_ldm, tiny_folder, tmp_path):
    clip = api.tiny_model()
    a = img2img(_picture(), clip=clip, latent_model=tiny_ldm, seed=2, batch=2, progress=False, **I2I)
    b = img2img(_picture(), clip=clip, latent_model=tiny_ldm, seed=2, batch=2, progress=False, **I2I)
    assert a.images.shape == (2, 3, 24, 40) and torch.equal(a.images, b.images)
    assert not torch.allclose(a.images[0], a.images[1])  # two takes, each from its own noise
    assert a.settings["steps_run"] == int(6 * 0.8) and a.settings["seeds"] == [2, 3]
    run = api.run("img2img", image=_picture(), clip=clip, diffusion_model=str(tiny_folder), seed=2, batch=2, **I2I)
    path = run.save(tmp_path / "take.png", index=1)
    again = api.run(settings=path, image=_picture(), clip=clip)
    assert again.settings["seed"] == 3 and again.tensors.shape[0] == 1
    torch.testing.assert_close(again.tensors[0], run.tensors[1], atol=1e-4, rtol=0)


def test_img2img_strength_sets_how_much_is_redrawn(tiny_ldm):
    picture = _picture()
    with torch.no_grad():
        kept = tiny_ldm.decode(tiny_ldm.encode(picture), size=(24, 40))  # what the VAE alone gives back

    def change(strength: float) -> float:
        r = img2img(picture, latent_model=tiny_ldm, strength=strength, guidance_scale=0.0, seed=0, progress=False,
                    **{**I2I, "steps": 10})
        return float((r.images - kept).abs().mean())

    low, high = change(0.1), change(1.0)
    assert low < 0.5 * high, (low, high)


def test_img2img_keeps_every_pixel_outside_the_mask(tiny_ldm):
    picture = _picture()
    mask = torch.zeros(24, 40)
    mask[4:20, 8:24] = 1
    for feather in (0.0, 3.0):
        r = img2img(picture, mask=mask, clip=api.tiny_model(), latent_model=tiny_ldm, feather=feather, seed=1,
                    progress=False, **I2I)
        outside = (mask == 0).expand_as(r.images)
        assert torch.equal(r.images[outside], picture.expand_as(r.images)[outside])
        assert (r.images - picture).abs()[~outside].max() > 1e-2  # the region was redrawn
        assert r.settings["masked"] and r.settings["mask"]


def test_img2img_progress_counts_the_steps_run_and_cancel_keeps_a_picture(tiny_ldm):
    seen, token = [], CancelToken()

    def on_step(info):
        seen.append((info.step, info.total))
        if info.step == 2:
            token.cancel()

    r = img2img(_picture(), clip=api.tiny_model(), latent_model=tiny_ldm, callback=on_step, cancel=token,
                progress=False, **{**I2I, "steps": 10, "strength": 0.5})
    assert r.cancelled and [s for s in seen] == [(0, 5), (1, 5), (2, 5)]
    assert r.images.shape == (1, 3, 24, 40) and torch.isfinite(r.images).all()


@pytest.mark.parametrize("bad, message", [
    ({"prompt": " "}, "needs a prompt"), ({"strength": 0.0}, "strength=0.0"), ({"strength": 1.5}, "strength=1.5"),
    ({"feather": -1.0}, "feather=-1.0"), ({"recurrence": 0}, "recurrence=0"), ({"batch": 0}, "batch=0"),
])
def test_img2img_absurd_settings_are_named(bad, message):
    with pytest.raises(ParameterError, match=message):
        Img2ImgSettings(**{"prompt": "a blue circle", **bad}).validate()


def test_img2img_takes_one_picture_and_is_registered_with_a_mask_input(tiny_ldm):
    with pytest.raises(ParameterError, match="one picture at a time"):
        img2img(torch.rand(2, 3, 16, 16), latent_model=tiny_ldm, guidance_scale=0.0, progress=False, **I2I)
    m = api.get_method("img2img")
    assert [(i.name, i.mask) for i in m.image_inputs] == [("image", True)] and m.batch_setting == "batch"
    assert {p.name for p in api.list_presets() if p.method == "img2img"} >= {"img2img-recolour", "img2img-region"}
