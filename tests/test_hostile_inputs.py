"""Issue 27: no input exhausts the server, loses a user's file or passes silently wrong.

One test (or a few) per defect; each fails on the code before the fix. They are small: the tiny test CLIP, 1-2
steps, images of 32 px, batch engines driven by stand-in runs where the method itself is not the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from clipkit import api
from clipkit.cli import main
from clipkit.guidance.errors import CheckpointError, ClipKitError, ImageError, ParameterError, PromptError
from clipkit.guidance.images import load_image, read_settings, save_image
from clipkit.guidance.runs import RunResult
from clipkit.presets import PresetError, load_preset, make_preset, save_preset
from clipkit.registry import get_method

EDIT_FAST = {"steps": 1, "cutouts": 1}


def batch(*args: str) -> int:
    return main(["batch", "--tiny", "--no-progress", *args])


def picture(path: Path, size=(32, 32), colour=(200, 60, 40)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


@contextlib.contextmanager
def memory_cap(extra_bytes: int):
    """Cap this process's address space at its current size plus ``extra_bytes`` (soft limit only, restored after),
    so an allocation bomb fails here instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = vm + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------ 1. networks built from a file's config
def test_a_tiny_file_describing_a_huge_network_is_refused_fast_and_small(tmp_path):
    from clipkit.methods.enhance.checkpoints import load_network as load_enhance
    from clipkit.methods.style.feedforward import get_stylizer
    from clipkit.methods.style.network import load_network as load_style

    bomb = tmp_path / "bomb.safetensors"
    save_file({"x": torch.zeros(1)}, str(bomb), metadata={
        "kind": "text-stylizer", "config": json.dumps({"text_dim": 512, "ngf": 3000, "cond_dim": 256, "n_res": 2})})
    unet = tmp_path / "unet.safetensors"
    save_file({"x": torch.zeros(1)}, str(unet), metadata={"kind": "clipstyler-unet",
                                                           "config": json.dumps({"ngf": 100_000})})
    deep = tmp_path / "deep.safetensors"  # 100 000 residual blocks: slow to build even where it fits
    save_file({"x": torch.zeros(1)}, str(deep), metadata={
        "kind": "text-stylizer", "config": json.dumps({"text_dim": 512, "ngf": 16, "cond_dim": 256, "n_res": 10**5})})
    enhance = tmp_path / "enhance.safetensors"  # an empty tensor's shape costs no bytes in the file
    save_file({"cond_add1.weight": torch.zeros(3_000_000, 0, 3, 3)}, str(enhance))
    assert max(p.stat().st_size for p in (bomb, unet, deep, enhance)) < 300
    start = time.perf_counter()
    with memory_cap(1 << 30):  # 1 GB more than now: the unchecked builds asked for tens of GB
        for load, path in ((get_stylizer, bomb), (load_style, unet), (load_style, deep), (load_enhance, enhance)):
            with pytest.raises(CheckpointError) as e:
                load(path)
            assert path.name in str(e.value) or "cond_add1" in str(e.value)
            assert "parameters" in str(e.value) or "shape" in str(e.value)
    assert time.perf_counter() - start < 5


def test_a_latent_diffusion_folder_with_a_bomb_config_is_refused_before_loading(tmp_path):
    from clipkit.methods.diffusion.latent_model import load_latent_model, resolve_latent_model

    shipped = resolve_latent_model("world-ldm")
    folder = tmp_path / "ldm"
    for part, name in (("vae", "config.json"), ("denoiser", "config.json"), ("scheduler", "scheduler_config.json")):
        (folder / part).mkdir(parents=True)
        (folder / part / name).write_text((shipped / part / name).read_text())
        for weights in (shipped / part).glob("*.safetensors"):
            (folder / part / weights.name).symlink_to(weights)
    config = json.loads((folder / "denoiser" / "config.json").read_text())
    (folder / "denoiser" / "config.json").write_text(json.dumps({**config, "width": 1 << 30}))
    with pytest.raises(CheckpointError, match="width=1073741824 is out of range"):
        load_latent_model(folder)
    # in range, but far more than the weights beside it hold
    (folder / "denoiser" / "config.json").write_text(json.dumps({**config, "width": 8192}))
    with pytest.raises(CheckpointError, match=r"describes a network of [\d,]+ parameters, but the weights"):
        load_latent_model(folder)


def test_loading_a_diffusion_model_does_not_disturb_networks_other_threads_build():
    """diffusers' low-memory loading patched torch.nn.Module for the whole process: a network another app job
    built meanwhile landed on the meta device ("Cannot copy out of meta tensor", found by bench/app_load.py)."""
    from clipkit.methods.diffusion.latent_model import load_latent_model

    devices: set[str] = set()
    loading = threading.Event()
    done = threading.Event()

    def build() -> None:
        loading.wait(10)
        while not done.is_set():
            devices.add(torch.nn.Linear(4, 4).weight.device.type)

    builder = threading.Thread(target=build)
    builder.start()
    try:
        loading.set()
        load_latent_model("world-ldm", device="cpu")
    finally:
        done.set()
        builder.join(10)
    assert devices == {"cpu"}


# ------------------------------------------------------------------ 2. one pixel limit for every image input
def test_one_pixel_limit_for_files_pil_tensors_masks_and_app_uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPKIT_MAX_PIXELS", str(48 * 48))
    big = picture(tmp_path / "big.png", (64, 64))
    cases = {
        "file": lambda: load_image(big),
        "path to the API": lambda: api.run("edit", image=big, clip="tiny", prompt="a red circle", **EDIT_FAST),
        "PIL to the API": lambda: api.run("edit", image=Image.new("RGB", (64, 64)), clip="tiny",
                                          prompt="a red circle", **EDIT_FAST),
        "tensor to the API": lambda: api.run("edit", image=torch.rand(1, 3, 64, 64), clip="tiny",
                                             prompt="a red circle", **EDIT_FAST),
        "a batch of tensors": lambda: api.run("edit", image=torch.rand(4, 3, 32, 32), clip="tiny",
                                              prompt="a red circle", **EDIT_FAST),
        "mask": lambda: api.run("edit", image=Image.new("RGB", (32, 32)), mask=Image.new("L", (64, 64), 255),
                                clip="tiny", prompt="a red circle", **EDIT_FAST),
        "app upload": lambda: api.to_rgb(Image.new("RGB", (64, 64))),
    }
    for what, call in cases.items():
        with pytest.raises(ImageError, match=r"limit is 2,304 pixels \(0\.0 MP, \$CLIPKIT_MAX_PIXELS\)\. Resize") as e:
            call()
        assert "tiles" in str(e.value), what
    ok = api.run("edit", image=Image.new("RGB", (48, 48)), clip="tiny", prompt="a red circle", **EDIT_FAST)
    assert ok.image.size == (48, 48)  # at the limit: accepted


# ------------------------------------------------------------------ 3. 16-bit greyscale
def test_16_bit_greyscale_keeps_its_brightness(tmp_path):
    rng = np.random.default_rng(0)
    values = np.clip(rng.normal(126 * 257, 3000, (32, 32)), 0, 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    want = values.mean() / 257
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode.startswith("I")
        via_api = np.asarray(api.to_rgb(im)).mean()
    assert abs(np.asarray(load_image(tmp_path / "grey16.png")).mean() - want) < 2
    assert abs(via_api - want) < 2
    tensor = api._as_input_tensor(tmp_path / "grey16.png", "image")
    assert abs(float(tensor.mean()) * 255 - want) < 2


# ------------------------------------------------------------------ 4, 9. outputs never replace what a run reads
def test_a_batch_never_writes_over_its_masks_or_its_preset(tmp_path, capsys):
    images, masks = tmp_path / "in", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for n in ("a", "b"):
        picture(images / f"{n}.png")
        Image.new("L", (32, 32), 255).save(masks / f"{n}.png")
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    for extra in ([], ["--overwrite"]):
        assert batch("--preset", "edit-region-prompt", "--input", str(images), "--output", str(masks),
                     "--masks", str(masks), "--set", "steps=1", "--set", "cutouts=1", *extra) == 2
        assert "is the --masks folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before

    # the preset is an earlier output in the output folder, with the name an input's output would take
    prompts, out = tmp_path / "prompts", tmp_path / "out"
    prompts.mkdir()
    (prompts / "red.txt").write_text("a red circle")
    first = api.run("generate", clip="tiny", prompt="a blue square", steps=1, size=16, cutouts=1).save(out / "red.png")
    kept = first.read_bytes()
    assert batch("--preset", str(first), "--input", str(prompts), "--output", str(out), "--overwrite") == 2
    assert "the preset" in capsys.readouterr().err and first.read_bytes() == kept


def test_clipkit_run_never_writes_over_its_preset_png_or_its_input(tmp_path, capsys):
    source = api.run("generate", clip="tiny", prompt="a red circle", steps=1, size=16, cutouts=1).save(
        tmp_path / "x.png")
    kept = source.read_bytes()
    assert main(["run", "generate", "--tiny", "--quiet", "--preset", str(source), "--out", str(source),
                 "--steps", "2"]) == 2
    assert "refusing to write" in capsys.readouterr().err and source.read_bytes() == kept
    photo = picture(tmp_path / "photo.png")
    kept = photo.read_bytes()
    assert main(["run", "edit", "--tiny", "--quiet", "--image", str(photo), "--prompt", "a red circle",
                 "--steps", "1", "--cutouts", "1", "--out", str(photo)]) == 2
    assert photo.read_bytes() == kept


# ------------------------------------------------------------------ 5, 6, 7. the batch engine
def _stub_spec(run_one, method: str = "generate"):
    from clipkit.batch import BatchSpec

    return BatchSpec(method, {"method": method, "prompt": None}, run_one, image_input=None, text_field="prompt")


def _stub_result(prompt: str) -> api.Result:
    """What a run returns, without running a method (the batch engine is what these tests are about)."""
    g = torch.Generator().manual_seed(len(prompt))
    return api.result_of(RunResult(torch.rand(1, 3, 8, 8, generator=g), {"method": "generate", "prompt": prompt}))


def _prompt_files(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / f"{n}.txt").write_text(n)
    return folder


def test_one_bad_input_does_not_stop_the_batch(tmp_path, monkeypatch, capsys):
    import pickle

    from safetensors import SafetensorError

    from clipkit.batch import run_spec

    boom = {"b": IndexError("list index out of range"), "c": TypeError("bad operand"),
            "d": pickle.UnpicklingError("invalid load key"), "e": SafetensorError("header too large"),
            "f": RuntimeError("shape mismatch")}

    def run_one(prompt: str) -> api.Result:
        if prompt in boom:
            raise boom[prompt]
        return _stub_result(prompt)

    inputs = _prompt_files(tmp_path / "in", "abcdefg")
    out = tmp_path / "out"
    assert run_spec(_stub_spec(run_one), [str(inputs)], out, progress=False) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "g.png"]
    text = capsys.readouterr().err
    assert "2 done, 0 skipped (already done), 5 failed" in text
    for name, e in boom.items():
        assert f"{name}.txt: {type(e).__name__}: {e}" in text
    log = [json.loads(line) for line in next(out.glob("batch-*.jsonl")).read_text().splitlines()]
    assert {Path(r["input"]).stem: r["status"] for r in log if r["event"] == "file"} == {
        **{k: "failed" for k in boom}, "a": "done", "g": "done"}

    # a real broken input: an image PIL refuses outright (a decompression bomb) between two good ones
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    photos = tmp_path / "photos"
    photos.mkdir()
    picture(photos / "a.png", (12, 12))
    picture(photos / "b.png", (40, 40))  # over twice PIL's limit: Image.open raises DecompressionBombError
    picture(photos / "c.png", (12, 12))
    assert batch("--preset", "edit-region-prompt", "--input", str(photos), "--output", str(tmp_path / "edited"),
                 "--set", "steps=1", "--set", "cutouts=1") == 1
    assert sorted(p.name for p in (tmp_path / "edited").glob("*.png")) == ["a.png", "c.png"]
    assert "FAILED" in capsys.readouterr().err


def test_two_batches_on_one_output_folder_do_not_both_write(tmp_path):
    from clipkit.batch import run_spec

    out = tmp_path / "out"
    first_running, second_done = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow(prompt: str) -> api.Result:
        first_running.set()
        second_done.wait(20)
        return _stub_result(prompt)

    def job(name: str, run_one, folder: Path) -> None:
        try:
            results[name] = run_spec(_stub_spec(run_one), [str(folder)], out, progress=False)
        except ClipKitError as e:
            results[name] = e

    a = threading.Thread(target=job, args=("first", slow, _prompt_files(tmp_path / "a", ["x"])))
    a.start()
    assert first_running.wait(20)
    job("second", _stub_result, _prompt_files(tmp_path / "b", ["x"]))
    second_done.set()
    a.join(20)
    assert results["first"] == 0
    second = results["second"]
    assert isinstance(second, ParameterError) and "in use by another clipkit batch" in str(second)
    assert not (out / ".clipkit.lock").exists()  # released when the first ended
    # the lock of a job that died is taken over
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".clipkit.lock").write_text(f"{dead.pid} {os.uname().nodename} 2020-01-01T00:00:00Z clipkit batch\n")
    assert run_spec(_stub_spec(_stub_result), [str(tmp_path / "b")], out, progress=False, overwrite=True) == 0


def test_a_batch_output_folder_is_checked_before_any_work(tmp_path, capsys):
    from clipkit.batch import run_batch, run_spec

    calls = []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    inputs = _prompt_files(tmp_path / "in", ["x"])
    with pytest.raises(ParameterError, match="cannot create the output folder"):
        run_spec(_stub_spec(lambda prompt: calls.append(prompt)), [str(inputs)], blocker / "out", progress=False)
    with pytest.raises(ParameterError, match="is a file, not a folder"):
        run_batch("generate-preview", [str(inputs)], blocker, clip="tiny", progress=False)
    assert calls == []
    assert batch("--preset", "generate-preview", "--input", str(inputs), "--output", str(blocker / "out")) == 2
    assert "error: cannot create the output folder" in capsys.readouterr().err


# ------------------------------------------------------------------ 8. EXIF orientation
def test_exif_orientation_is_applied_to_files_and_pil_inputs(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the stored left
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "camera.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
        assert upright.size == (20, 40)
        via_pil = api._as_input_tensor(im, "image")
        via_rgb = api.to_rgb(im)
    loaded = load_image(path)
    assert loaded.size == (20, 40) and via_rgb.size == (20, 40)
    assert via_pil.shape == (1, 3, 40, 20) and api._as_input_tensor(path, "image").shape == (1, 3, 40, 20)
    assert np.abs(np.asarray(loaded, np.int16) - np.asarray(upright, np.int16)).max() == 0
    assert loaded.getpixel((10, 2))[2] > 200  # the blue strip is on top once turned


# ------------------------------------------------------------------ 10. seeds
def test_one_seed_policy_huge_and_random_seeds(fast_generate):
    for given, want in ((2**64 + 5, (2**64 + 5) % 2**63), (2**63, 0), (-2, 2**63 - 2)):
        r = api.run("generate", clip="tiny", prompt="a red circle", seed=given, **fast_generate)
        assert r.record["settings"]["seed"] == want
    a = api.run("generate", clip="tiny", prompt="a red circle", seed=-1, **fast_generate)
    b = api.run("generate", clip="tiny", prompt="a red circle", seed=-1, **fast_generate)
    seed = a.record["settings"]["seed"]
    assert 0 <= seed < 2**63 and seed != b.record["settings"]["seed"]
    again = api.run("generate", clip="tiny", prompt="a red circle", seed=seed, **fast_generate)
    assert again.tensors.equal(a.tensors)  # the run reproduces from its record
    from clipkit.methods.image.generate import generate  # the methods called directly follow the same policy

    direct = generate(clip=api.tiny_model(), prompt="a red circle", seed=-1, progress=False, **fast_generate)
    assert 0 <= direct.settings["seed"] < 2**63


# ------------------------------------------------------------------ 11. presets
def test_saving_presets_never_replaces_or_shadows_silently(user_presets):
    s = get_method("generate").defaults()
    save_preset(make_preset("generate", s, "mine", "by alice"))
    with pytest.raises(PresetError, match="already exists"):
        save_preset(make_preset("generate", {"prompt": "bob's"}, "mine", "by bob"))
    assert load_preset("mine").description == "by alice"
    save_preset(make_preset("generate", {"prompt": "bob's"}, "mine", "by bob"), overwrite=True)
    assert load_preset("mine").description == "by bob"
    with pytest.raises(PresetError, match="shipped preset"):
        save_preset(make_preset("generate", {"prompt": "mine"}, "generate-preview"))
    assert load_preset("generate-preview").settings["prompt"] != "mine"
    for name in ("v1.json", "final.png", "Final.PNG", "trailing."):
        with pytest.raises(PresetError, match="cannot"):
            make_preset("generate", s, name)
    assert sorted(p.name for p in user_presets.iterdir()) == ["mine.json"]


def test_a_preset_name_is_not_shadowed_by_a_file_in_the_current_folder(user_presets, tmp_path, monkeypatch):
    save_preset(make_preset("generate", {"prompt": "a blue star"}, "my look"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my look").write_text("not a preset")
    assert load_preset("my look").settings["prompt"] == "a blue star"


# ------------------------------------------------------------------ 12. the app's trust boundary
def test_the_app_accepts_no_server_path_and_does_not_say_whether_it_exists(tmp_path, monkeypatch):
    from clipkit.ui.app import ClipKitApp

    monkeypatch.delenv("CLIPKIT_WEIGHTS_DIR", raising=False)
    app = ClipKitApp(test_models=True, output_dir=tmp_path / "out")
    photo = {"image": Image.new("RGB", (32, 32))}
    cases = [("stylize", "checkpoint"), ("enhance", "checkpoint"), ("generate", "pretrained"),
             ("diffusion", "diffusion_model")]
    for method, field in cases:
        m = get_method(method)
        messages = []
        for value in ("/etc/passwd", "/etc/no-such-file-here", "../../etc/passwd", "~/.bashrc", "/etc"):
            s = m.settings_cls(**{field: value})
            with pytest.raises(ClipKitError) as e:
                list(app.run_stream(m, s, photo if m.image_inputs else {}))
            messages.append(str(e.value))
            assert "passwd" not in str(e.value) and "no-such-file" not in str(e.value)
        assert len(set(messages)) == 1, (method, messages)  # one answer, whatever the server holds
        assert "server paths are not accepted" in messages[0]
    # what is offered passes: shipped names, the control's choices, files inside the weights folder
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "mine.safetensors").write_bytes(b"x")
    (weights / "escape.safetensors").symlink_to("/etc/passwd")
    app = ClipKitApp(test_models=True, output_dir=tmp_path / "out", weights_dirs=[weights])
    stylize = get_method("stylize")
    assert app.trusted_settings(stylize, stylize.settings_cls(checkpoint="world-stylizer")).checkpoint == \
        "world-stylizer"
    enhance = get_method("enhance")
    assert app.trusted_settings(enhance, enhance.settings_cls(checkpoint="rave-paired")).checkpoint == "rave-paired"
    mine = app.trusted_settings(stylize, stylize.settings_cls(checkpoint="mine.safetensors")).checkpoint
    assert Path(mine) == (weights / "mine.safetensors").resolve()
    with pytest.raises(ParameterError, match="server paths are not accepted"):
        app.trusted_settings(stylize, stylize.settings_cls(checkpoint="escape.safetensors"))


def test_app_result_names_are_unguessable_and_only_results_can_be_sent_on(tmp_path, fast_generate):
    from clipkit.ui.app import ClipKitApp

    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("generate")
    result = api.run("generate", clip="tiny", seed=3, **fast_generate)
    a, b = app.save_results(m, result)[0].path, app.save_results(m, result)[0].path
    assert a != b
    for path in (a, b):  # <method>-<time>-s<seed>-<random token>.png
        assert "-s3-" in Path(path).stem and len(Path(path).stem.split("-s3-", 1)[1]) >= 16
    assert app.is_result(a) and not app.is_result("/etc/passwd") and not app.is_result(tmp_path / "nope.png")


# ------------------------------------------------------------------ 13. the smaller ones
def test_outputs_presets_and_weights_files_get_the_usual_mode(tmp_path, user_presets):
    from clipkit.guidance.runs import save_safetensors

    umask = os.umask(0o022)
    os.umask(umask)
    want = 0o666 & ~umask
    png = save_image(torch.rand(1, 3, 8, 8), tmp_path / "out.png")
    preset = save_preset(make_preset("generate", {"prompt": "a red circle"}, "moded"))
    st = save_safetensors({"x": torch.zeros(2)}, tmp_path / "w.safetensors")
    for path in (png, preset, st):
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_stale_temporary_files_of_killed_writes_are_cleaned(tmp_path):
    old = time.time() - 2 * 3600
    stale = [tmp_path / ".out.png.ab12cd34.tmp", tmp_path / ".w.safetensors.tmp", tmp_path / ".x.png.q1.clipkit-tmp"]
    fresh, foreign = tmp_path / ".y.png.zz99yy88.tmp", tmp_path / ".notes.tmp"
    for p in (*stale, fresh, foreign):
        p.write_bytes(b"half")
    for p in (*stale, foreign):
        os.utime(p, (old, old))
    save_image(torch.rand(1, 3, 8, 8), tmp_path / "new.png")
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and foreign.exists()


def test_deeply_nested_preset_json_is_refused_clearly(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "clipkit-preset", "version": 1, "method": "generate", "settings": {"prompt": '
                    + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(PresetError, match="nested deeper than 50"):
        load_preset(deep)
    nested: list = []
    for _ in range(60):
        nested = [nested]
    with pytest.raises(PresetError, match="nested deeper than 50"):
        api.build_settings("generate", {"prompt": nested})


def test_a_colon_alone_is_not_a_prompt():
    from clipkit.guidance.prompts import parse_prompts

    for spec in (":", " : ", "a red circle | :", "::"):
        with pytest.raises(PromptError, match="empty prompt"):
            parse_prompts(spec)
    assert parse_prompts("style: art deco")[0].text == "style: art deco"


def test_batch_set_values_follow_the_field_types(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    picture(photos / "p.png")
    assert batch("--preset", "edit-region-prompt", "--input", str(photos), "--output", str(tmp_path / "e"),
                 "--set", "prompt=1984", "--set", "steps=1", "--set", "cutouts=1") == 0
    assert read_settings(tmp_path / "e" / "p.png")["settings"]["prompt"] == "1984"
    from clipkit.presets import text_overrides

    assert text_overrides("generate", {"prompt": "1984", "seed": "7", "lr": "0.5"}) == {
        "prompt": "1984", "seed": 7, "lr": 0.5}
    assert text_overrides("stylize", {"size": "null", "prompt": "null", "noise": "false"}) == {
        "size": None, "prompt": "null", "noise": False}


def test_tiny_images_are_refused_with_a_clear_message():
    for image in (Image.new("RGB", (1, 1)), torch.rand(1, 3, 1, 1), Image.new("RGB", (7, 64))):
        with pytest.raises(ImageError, match="at least 8 pixels"):
            api.run("edit", image=image, clip="tiny", prompt="a red circle", **EDIT_FAST)


def test_the_app_status_shows_no_nan():
    from clipkit.ui.app import caption_for, format_values

    assert format_values({"loss": float("nan"), "t": 0.5}) == "noise level 0.5"
    record = {"settings": {"method": "diffusion", "seed": 1}, "steps_done": 2, "final": {"loss": float("nan")}}
    assert "nan" not in caption_for(record)


def test_animated_images_are_refused_not_cut_to_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageError, match="3 frames"):
        load_image(tmp_path / "anim.gif")
    with Image.open(tmp_path / "anim.gif") as im, pytest.raises(ImageError, match="3 frames"):
        api.run("edit", image=im, clip="tiny", prompt="a red circle", **EDIT_FAST)
