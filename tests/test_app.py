"""The Python API and the app's logic (no browser): reproducible, thread-safe, cancellable, clear on errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from clipkit import api
from clipkit.guidance.errors import ParameterError, WeightsNotFoundError
from clipkit.presets import PresetError
from clipkit.registry import get_method, methods


def test_same_preset_and_seed_give_the_same_image(fast_generate):
    a = api.run("generate", preset="generate-preview", clip="tiny", seed=5, **fast_generate)
    b = api.generate("generate-preview", clip="tiny", seed=5, **fast_generate)
    c = api.run("generate", preset="generate-preview", clip="tiny", seed=6, **fast_generate)
    assert isinstance(a.image, Image.Image) and a.image.size == (32, 32)
    assert a.tensors.equal(b.tensors) and a.record["settings"] == b.record["settings"]
    assert not a.tensors.equal(c.tensors)
    rec = a.record
    assert rec["settings"]["method"] == "generate" and rec["settings"]["seed"] == 5
    assert set(rec["final"]) >= {"loss", "prompt", "tv"} and rec["steps_done"] == 2
    assert rec["timings"]["optimise_s"] > 0 and len(a.history) == 2


def test_two_calls_in_threads_match_calls_alone(fast_generate):
    alone = [api.generate(clip="tiny", seed=s, prompt=p, **fast_generate).tensors
             for s, p in ((1, "a red circle"), (2, "a green square"))]
    out: dict[int, torch.Tensor] = {}

    def work(i: int, seed: int, prompt: str) -> None:
        out[i] = api.generate(clip="tiny", seed=seed, prompt=prompt, **fast_generate).tensors

    threads = [threading.Thread(target=work, args=(0, 1, "a red circle")),
               threading.Thread(target=work, args=(1, 2, "a green square"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0].equal(alone[0]) and out[1].equal(alone[1])


def test_progress_callback_and_cancel_keep_the_partial_result(fast_generate):
    token = api.CancelToken()
    seen: list[api.StepInfo] = []

    def cb(info: api.StepInfo) -> None:
        seen.append(info)
        if info.step == 2:
            token.cancel()

    r = api.generate(clip="tiny", callback=cb, cancel=token, **{**fast_generate, "steps": 6})
    assert r.record["cancelled"] and r.record["steps_done"] == 2 and len(seen) == 2
    assert seen[0].preview is not None and seen[0].preview.shape[-2:] == (32, 32)
    assert {"loss", "prompt", "tv"} <= set(seen[0].values)


def test_api_errors_name_the_problem(fast_generate):
    with pytest.raises(PresetError, match="unknown setting 'stepz' for method 'generate'; valid settings"):
        api.generate(clip="tiny", stepz=3)
    with pytest.raises(ParameterError, match="unknown method 'dream'; available methods: diffusion, img2img, generate"):
        api.run("dream")
    with pytest.raises(ParameterError, match="method 'edit' needs image=<PIL image or tensor>"):
        api.run("edit", prompt="x", clip="tiny")
    with pytest.raises(PresetError, match="is for method 'enhance', not 'generate'"):
        api.run("generate", preset="enhance-gentle")
    with pytest.raises(WeightsNotFoundError, match="nowhere.safetensors"):
        api.generate(pretrained="/nowhere.safetensors", **fast_generate)


def test_edit_takes_pil_inputs_and_a_mask_keeps_outside_pixels():
    img = Image.new("RGB", (48, 32), (200, 40, 40))
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (0, 0, 24, 32))
    r = api.run("edit", image=img, mask=mask, prompt="a blue square", steps=2, cutouts=2, clip="tiny")
    out = r.tensors[0]
    src = torch.tensor([200, 40, 40]).view(3, 1, 1) / 255
    assert torch.allclose(out[:, :, 24:], src.expand(3, 32, 24), atol=1e-6)
    assert not torch.allclose(out[:, :, :24], src.expand(3, 32, 24), atol=1e-3)


def test_an_edit_output_carries_its_mask_and_reproduces_exactly(tmp_path):
    img = Image.new("RGB", (40, 28), (30, 90, 200))
    mask = Image.new("L", (40, 28), 0)
    mask.paste(255, (8, 4, 30, 20))
    r = api.run("edit", image=img, mask=mask, prompt="a red circle", steps=2, cutouts=2, seed=3, clip="tiny")
    path = r.save(tmp_path / "edit.png")
    back = api.recorded_mask(path)
    assert back is not None and np.array_equal(np.array(back), np.array(mask))
    again = api.run(settings=str(path), image=img, mask=back, clip="tiny")
    assert torch.equal(again.tensors, r.tensors)
    plain = api.run("edit", image=img, prompt="a red circle", steps=1, cutouts=2, clip="tiny")
    assert api.recorded_mask(plain.record) is None


def test_registry_has_only_working_methods_and_reports_missing_weights(tmp_path):
    names = list(methods())
    assert names[:4] == ["diffusion", "img2img", "generate", "edit"] and "enhance" in names
    for m in methods().values():
        assert m.field_names() and m.runner is not None
    msg = get_method("generate").missing(
        get_method("generate").settings_cls(pretrained=str(tmp_path / "missing.safetensors")))
    assert msg and "missing.safetensors" in msg


# ------------------------------------------------------------------------------------------- app logic
gradio = pytest.importorskip("gradio")

from clipkit.ui.app import (  # noqa: E402
    ClipKitApp,
    build_app,
    mask_painter_value,
    painted_mask,
    settings_to_values,
    values_to_settings,
)


def test_controls_round_trip_to_settings():
    m = get_method("generate")
    values = dict(zip(m.field_names(), settings_to_values(m, api.load_preset("generate-preview").settings)))
    assert values["pretrained"] == ""  # None shows as an empty box
    values["steps"] = 3.0  # sliders hand back floats
    s = values_to_settings(m, values)
    assert s.steps == 3 and isinstance(s.steps, int) and s.pretrained is None
    with pytest.raises(PresetError, match="setting 'steps' must be an integer, got float 2.5"):
        values_to_settings(m, {**values, "steps": 2.5})


def test_paint_becomes_the_mask_at_the_picture_size():
    bg = Image.new("RGB", (20, 10), (10, 20, 30))
    layer = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (5, 0, 10, 10))
    mask = painted_mask({"background": None, "layers": [layer], "composite": None}, bg)
    arr = torch.from_numpy(np.array(mask)).int()  # the brush alone counts: the painter's picture may be missing
    assert arr[:, 5:10].eq(255).all() and arr[:, :5].eq(0).all() and arr[:, 10:].eq(0).all()
    assert painted_mask({"background": bg, "layers": [layer], "composite": bg}, bg.resize((40, 20))).size == (40, 20)
    unpainted = {"background": bg, "layers": [Image.new("RGBA", (20, 10))], "composite": bg}
    assert painted_mask(unpainted, bg) is None and painted_mask(None, bg) is None


def test_a_recorded_mask_shows_as_a_tint_and_comes_back_as_the_same_mask():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 255)  # already magenta: tinted green instead, still found
    bg = Image.fromarray(pixels, "RGB")
    mask = Image.new("L", (20, 10), 0)
    mask.paste(255, (0, 0, 12, 8))
    value = mask_painter_value(bg, mask)
    shown = np.asarray(value["background"])
    assert (shown[8:, :] == pixels[8:, :]).all() and (shown[:, 12:] == pixels[:, 12:]).all()  # untinted outside
    assert np.array_equal(np.array(painted_mask(value, bg)), np.array(mask))
    stroke = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    stroke.paste((255, 0, 255, 255), (15, 9, 20, 10))  # painting more adds to the recorded mask
    both = np.array(painted_mask({**value, "layers": [stroke]}, bg)) > 0
    assert both[9, 15:].all() and both[:8, :12].all() and both.sum() == 12 * 8 + 5
    assert mask_painter_value(bg)["background"].tobytes() == bg.tobytes()  # a new picture: nothing painted
    assert mask_painter_value(None, mask) is None  # no picture to paint on yet


def test_run_stream_previews_then_saves_a_reproducible_png(tmp_path, fast_generate):
    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("generate")
    s = values_to_settings(m, {**api.load_preset("generate-preview").settings, **fast_generate, "seed": 9})
    events = list(app.run_stream(m, s, {}))
    kinds = [k for k, _ in events]
    assert "preview" in kinds and "status" in kinds and kinds[-1] == "result"
    assert any("Step 2 of 2" in v and "100 %" in v for k, v in events if k == "status")
    (entry,) = app.save_results(m, events[-1][1])
    same = api.run(preset=entry.path, clip="tiny")  # the app's output reproduces through the API
    assert same.tensors.equal(events[-1][1].tensors) and "seed 9" in entry.caption


def test_a_batch_is_saved_image_by_image_and_previewed_as_one_sheet(tmp_path):
    from clipkit.guidance.images import load_image
    from clipkit.ui.app import batch_sheet

    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("diffusion")
    s = values_to_settings(m, {**api.load_preset("diffusion-quick").settings, "steps": 2, "recurrence": 1,
                               "batch": 3, "seed": 4, "size": 32})
    result = list(app.run_stream(m, s, {}))[-1][1]
    entries = app.save_results(m, result)
    assert [e.caption.split(" · ")[-1] for e in entries] == ["image 1 of 3", "image 2 of 3", "image 3 of 3"]
    assert [e.caption.split(" · ")[1] for e in entries] == ["seed 4", "seed 5", "seed 6"]  # each image's own seed
    for i, e in enumerate(entries):  # each file is its own image of the batch, with the settings that redraw it
        assert load_image(e.path).tobytes() == result.images[i].tobytes()
    again = api.run(preset=entries[2].path, clip="tiny")  # the third image alone: seed 6, a batch of one
    assert again.tensors.shape[0] == 1 and entries[2].record["settings"]["seed"] == 6
    torch.testing.assert_close(again.tensors[0], result.tensors[2], atol=1e-4, rtol=0)
    sheet = batch_sheet(result.tensors)
    assert sheet.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # 2 x 2 grid with 2 px gaps


def test_cancel_before_start_and_errors_surface(tmp_path, fast_generate):
    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("generate")
    key = app.key(None, m)
    assert app.cancel(key) is False  # nothing armed yet
    app.arm(key)
    assert app.cancel(key) is True
    events = list(app.run_stream(m, m.settings_cls(**fast_generate), {}, key))
    assert events == [("status", "Cancelled before it started.")]
    assert app.cancel(key) is False  # the token went with the run
    real = ClipKitApp(test_models=False, output_dir=tmp_path, weights_dirs=[tmp_path])  # files there may be named
    with pytest.raises(WeightsNotFoundError, match="missing.pt"):
        list(real.run_stream(m, m.settings_cls(pretrained=str(tmp_path / "missing.pt"), **fast_generate), {}))
    assert list(tmp_path.glob("*.png")) == []


def test_app_builds_one_tab_per_family_with_a_shared_run_slot(tmp_path, monkeypatch):
    from clipkit.guidance import weights

    weights.shipped_dirs("stylizer")  # providers registered, then the shipped stylizer hidden: its tab must say so
    monkeypatch.setitem(weights._SHIPPED, "stylizer", [])
    monkeypatch.chdir(tmp_path)
    demo = build_app(test_models=False, output_dir=tmp_path)
    labels = [b.label for b in demo.blocks.values() if type(b).__name__ == "Tab"]
    titles = {(m.family or m.title) for m in methods().values()}
    assert titles <= set(labels)
    assert "StyleGAN" in labels  # the StyleGAN family registers its own tab (Sample, Invert)
    assert labels[:3] == ["Generate", "Diffusion", "Pixels"]  # the default run is the diffusion model's
    runs = [d for d in demo.fns.values() if getattr(d, "concurrency_id", None) == "clipkit-runs"]
    assert len(runs) == len(methods()) and all(d.concurrency_limit == 1 for d in runs)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    # a tab names its missing weights exactly when they are missing
    for m in methods().values():
        assert (f"{m.name}-missing" in ids) == (m.missing(test_models=False) is not None), m.name
    assert "stylize-missing" in ids


def test_a_live_slider_redraws_the_last_result_without_searching_again(tmp_path):
    """StyleMC in the app: after one Run, moving the strength redraws from the run's own direction (no second
    search: the history is untouched and the result equals the API's apply), 0 gives the start picture, and a
    changed prompt asks for Run instead of showing a picture that is not the result's."""
    from clipkit.ui.app import values_to_settings

    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("stylemc")
    s = values_to_settings(m, {**api.settings_dict(m.defaults()), "count": 2, "find_seeds": 4, "batch": 2})
    result = list(app.run_stream(m, s, {}))[-1][1]
    (entry, _) = app.save_results(m, result)
    before, after = app.before_after(m, s, {}, result, entry.path)
    start = api.run("stylegan", count=2, seed=s.seed, truncation=s.truncation)
    assert before.tobytes() == app_sheet(start.tensors).tobytes()
    stronger = dataclasses.replace(s, change_power=2 * s.change_power)
    (b2, a2), status = app.live_update(m, stronger, {}, entry)
    assert "Live" in status and b2.tobytes() == before.tobytes()
    applied = api.run("stylemc", stronger, clip="tiny", direction=result)
    assert a2.tobytes() == app_sheet(applied.tensors).tobytes() != after.tobytes()
    picture, status = app.live_update(m, dataclasses.replace(s, prompt="a star"), {}, entry)
    assert "Press **Run**" in status and "Prompt" in status
    _, status = app.live_update(m, s, {}, None)
    assert "Run once first" in status


def test_artifact_inputs_take_results_and_uploads_only(tmp_path):
    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("styleclip_mapper")
    with pytest.raises(ParameterError, match="Trained mapper: none given"):
        app.artifact_files(m, {"mapper": None})
    outside = tmp_path.parent / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    with pytest.raises(ParameterError, match="only this app's results"):
        app.artifact_files(m, {"mapper": str(outside)})
    sample = api.run("stylegan", count=1, seed=3)
    path = tmp_path / "sample.png"
    sample.save(path)
    files = api.artifact_files(path)  # what Send-to offers the next tab: the latent beside the PNG
    kind, latent = files["latent"]
    assert kind == "latent/wplus" and app.is_result(latent, ".safetensors")
    assert app.artifact_files(get_method("stylemc"), {"latent": latent}) == {"latent": latent}


def app_sheet(images: torch.Tensor) -> Image.Image:
    from clipkit.ui.app import batch_sheet

    return batch_sheet(images)


def test_the_status_line_is_for_people():
    from clipkit.ui.app import format_values, progress_line

    assert progress_line(10, 40, 5.0) == "**Step 10 of 40** · 25 % · about 15 s left"
    assert progress_line(40, 40, 20.0) == "**Step 40 of 40** · 100 %"
    assert format_values({"tv": 0.012345, "latent_l2": 2.0}) == "roughness 0.0123 · distance from the start 2"


def test_history_lists_what_the_app_saved_newest_first(tmp_path, fast_generate):
    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("generate")
    s = values_to_settings(m, {**api.load_preset("generate-preview").settings, **fast_generate})
    first = app.save_results(m, list(app.run_stream(m, dataclasses.replace(s, seed=1), {}))[-1][1])
    second = app.save_results(m, list(app.run_stream(m, dataclasses.replace(s, seed=2), {}))[-1][1])
    (tmp_path / "not-a-result.png").write_bytes(b"not a png")
    later = ClipKitApp(test_models=True, output_dir=tmp_path)  # a restarted app sees them too
    found = later.saved_results()
    assert [e.path for e in found] == [second[0].path, first[0].path]
    assert found[0].record["settings"]["seed"] == 2 and "seed 2" in found[0].caption
    build_app(test_models=True, output_dir=tmp_path)  # the History tab builds with its wiring


def test_the_stylizer_strength_slider_redraws_from_the_cached_picture(tmp_path, monkeypatch):
    from clipkit.methods.style import feedforward

    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    m = get_method("stylize")
    photo = Image.new("RGB", (48, 40), (90, 140, 200))
    s = values_to_settings(m, {**api.settings_dict(m.defaults()), "size": 48})
    result = list(app.run_stream(m, s, {"image": photo}))[-1][1]
    (entry,) = app.save_results(m, result)
    calls = []
    monkeypatch.setattr(feedforward, "text_condition", lambda *a, **k: calls.append(1))  # a forward would need it
    (before, after), status = app.live_update(m, dataclasses.replace(s, strength=0.5), {"image": photo}, entry)
    assert not calls and "Live" in status  # no second forward pass: the stylised picture was cached
    x = api._as_input_tensor(photo, "image")
    x = torch.nn.functional.interpolate(x, size=(40, 48)) if x.shape[-2:] != (40, 48) else x
    half = torch.lerp(x, result.tensors, 0.5).clamp(0, 1)
    assert after.tobytes() == app_sheet(half).tobytes()
    assert before.tobytes() == app_sheet(x.clamp(0, 1)).tobytes()  # strength 0: the photo itself
