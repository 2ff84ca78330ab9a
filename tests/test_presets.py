"""Presets: every shipped file validates, schema errors name the key and what was expected, outputs load back."""

from __future__ import annotations

import json
import re

import pytest

from clipkit import api
from clipkit.presets import (
    FORMAT,
    Preset,
    PresetError,
    list_presets,
    load_preset,
    make_preset,
    parse_preset,
    save_preset,
    shipped_preset_dirs,
)
from clipkit.registry import methods


def doc(**settings) -> dict:
    return {"format": FORMAT, "version": 1, "name": "t", "method": "generate", "settings": settings}


def test_every_shipped_preset_is_valid_and_complete():
    files = sorted(p for d in shipped_preset_dirs() for p in d.glob("*.json"))
    assert len(files) >= 10
    for path in files:
        p = load_preset(path)
        m = methods()[p.method]
        assert list(p.settings) == m.field_names(), path
        assert p.name == path.stem, f"{path}: name should match the file name"
        assert p.description, f"{path}: artists need a description"
    shipped = {p.method for p in list_presets()}
    assert {"generate", "enhance", "clipstyler"} <= shipped


def test_unknown_setting_is_named_with_the_valid_ones():
    with pytest.raises(PresetError) as e:
        parse_preset(doc(prompt="x", stepz=3), "p.json")
    msg = str(e.value)
    assert "p.json" in msg and "'stepz'" in msg and "valid settings: prompt, steps, size" in msg


def test_wrong_types_are_named():
    for value, expected in (("ten", "integer"), (2.5, "integer"), (True, "integer")):
        with pytest.raises(PresetError, match=f"setting 'steps' must be an {expected}, got"):
            parse_preset(doc(steps=value))
    with pytest.raises(PresetError, match="setting 'lr' must be a number, got str"):
        parse_preset(doc(lr="fast"))
    with pytest.raises(PresetError, match=re.escape("setting 'pretrained' must be str | None, got int 3")):
        parse_preset(doc(pretrained=3))
    assert parse_preset(doc(lr=1)).settings["lr"] == 1.0  # an int is a fine float


def test_ranges_use_the_methods_own_validation():
    with pytest.raises(PresetError, match="steps=0"):
        parse_preset(doc(steps=0))
    with pytest.raises(PresetError, match="templates='fancy' must be one of"):
        parse_preset(doc(templates="fancy"))


def test_document_level_errors_are_specific():
    good = doc(prompt="x")
    with pytest.raises(PresetError, match="unknown key 'steps'; a preset has only format, version"):
        parse_preset({**good, "steps": 3})
    with pytest.raises(PresetError, match="missing required key settings"):
        parse_preset({k: v for k, v in good.items() if k != "settings"})
    with pytest.raises(PresetError, match="'format' must be 'clipkit-preset'"):
        parse_preset({**good, "format": "other"})
    with pytest.raises(PresetError, match="version 2 is newer"):
        parse_preset({**good, "version": 2})
    with pytest.raises(PresetError, match="unknown method 'dream'; available methods: diffusion, img2img, generate"):
        parse_preset({**good, "method": "dream"})
    with pytest.raises(PresetError, match="a preset is a JSON object"):
        parse_preset([good])


def test_bad_json_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(PresetError, match="broken.json: not valid JSON"):
        load_preset(bad)
    with pytest.raises(PresetError, match="no preset named 'nope'; known presets: .*generate-preview"):
        load_preset("nope")


def test_partial_settings_take_defaults_and_save_writes_all(user_presets):
    p = parse_preset(doc(prompt="a blue star"))
    assert p.settings["steps"] == methods()["generate"].defaults().steps
    path = save_preset(make_preset("generate", {"prompt": "a blue star", "seed": 4}, "my look", "mine"))
    assert path.parent == user_presets
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == 1 and len(data["settings"]) == len(p.settings)
    again = load_preset("my look")
    assert again.settings == {**p.settings, "seed": 4} and again.description == "mine"
    assert "my look" in [x.name for x in list_presets("generate")]


def test_output_png_loads_back_as_a_preset_and_reproduces_it(tmp_path, fast_generate):
    first = api.run("generate", preset="generate-preview", clip="tiny", seed=3, **fast_generate)
    png = first.save(tmp_path / "out.png")
    p = load_preset(png)
    assert isinstance(p, Preset) and p.method == "generate" and p.settings["seed"] == 3
    assert "clip" not in p.settings  # derived record keys are not settings
    again = api.run(preset=png, clip="tiny")
    assert again.tensors.equal(first.tensors)
    assert again.record["settings"] == first.record["settings"]


def test_png_without_settings_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(PresetError, match="carries no clipkit settings"):
        load_preset(tmp_path / "plain.png")


def test_cli_generate_applies_presets_and_reproduces_its_own_output(tmp_path):
    from PIL import Image

    from clipkit.cli import main
    from clipkit.guidance.images import read_settings

    tiny = ["--model", "tiny-clip", "--clip-weights", "random", "--steps", "2", "--size", "32", "--cutouts", "2"]
    first = tmp_path / "first.png"
    assert main(["run", "generate", "--preset", "generate-preview", *tiny, "--out", str(first)]) == 0
    s = read_settings(first)["settings"]
    assert s["prompt"] == load_preset("generate-preview").settings["prompt"] and s["steps"] == 2
    again = tmp_path / "again.png"
    assert main(["run", "generate", "--preset", str(first), "--out", str(again)]) == 0
    assert Image.open(again).tobytes() == Image.open(first).tobytes()
    assert read_settings(again)["settings"] == s


def test_style_presets_drive_the_other_style_methods_through_shared_settings():
    monet = load_preset("style-monet")
    m, s = api.build_settings("poda", "style-monet")
    assert s.prompt == monet.settings["prompt"] and s.seed == monet.settings["seed"]
    assert s.steps == methods()["poda"].defaults().steps  # clipstyler's steps are not poda's
    with pytest.raises(PresetError, match="is for method 'clipstyler', not 'enhance'"):
        api.build_settings("enhance", "style-monet")
