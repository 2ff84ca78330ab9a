"""Batch CLI: same output as the API for the same preset, resume, dry run, failures reported, inputs protected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipkit import api
from clipkit.cli import main
from clipkit.guidance.images import read_settings

FAST = ["--set", "steps=2", "--set", "size=32", "--set", "cutouts=2"]


def batch(*args: str) -> int:
    return main(["batch", "--tiny", "--no-progress", *args])


def logs(out: Path) -> list[list[dict]]:
    return [[json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("batch-*.jsonl"))]


@pytest.fixture
def prompts(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "red.txt").write_text("a red circle\n")
    (d / "blue.txt").write_text("a blue square\n")
    (d / "empty.txt").write_text("   \n")  # fails: empty prompt
    (d / "notes.md").write_text("not an input")
    return d


def test_batch_runs_resumes_and_reports_failures(prompts, tmp_path, capsys):
    out = tmp_path / "out"
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *FAST) == 1
    err = capsys.readouterr().err
    assert "2 done, 0 skipped (already done), 1 failed" in err and "FAILED" in err and "empty.txt" in err
    assert sorted(p.name for p in out.glob("*.png")) == ["blue.png", "red.png"]
    s = read_settings(out / "red.png")["settings"]
    assert s["prompt"] == "a red circle" and s["steps"] == 2 and s["clip"] == "tiny-clip"
    # the same preset through the API gives the same pixels
    ref = api.run(preset="generate-preview", clip="tiny", prompt="a red circle", steps=2, size=32, cutouts=2)
    assert Image.open(out / "red.png").tobytes() == ref.image.tobytes()

    (prompts / "empty.txt").write_text("a green star")
    mtime = (out / "red.png").stat().st_mtime_ns
    assert batch("--preset", "generate-preview", "--input", str(prompts / "*.txt"), "--output", str(out),
                 *FAST) == 0
    assert "1 done, 2 skipped (already done), 0 failed" in capsys.readouterr().err
    assert (out / "red.png").stat().st_mtime_ns == mtime  # resumed, not redone
    first, second = logs(out)
    assert [r["event"] for r in first] == ["start", "file", "file", "file", "summary"]
    assert first[0]["settings"]["steps"] == 2 and first[-1]["failed"] == 1
    by_input = {Path(r["input"]).name: r for r in first if r["event"] == "file"}
    assert by_input["red.txt"]["status"] == "done" and by_input["red.txt"]["timings"]["optimise_s"] > 0
    assert "empty prompt" in by_input["empty.txt"]["error"]
    assert {r["status"] for r in second if r["event"] == "file"} == {"done", "skipped"}


def test_changed_settings_are_not_mistaken_for_done_and_dry_run_writes_nothing(prompts, tmp_path, capsys):
    out = tmp_path / "out"
    (prompts / "empty.txt").unlink()
    assert batch("--preset", "generate-preview", "--input", str(prompts / "red.txt"), "--output", str(out),
                 *FAST) == 0
    capsys.readouterr()
    before = sorted(out.iterdir())
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *FAST,
                 "--set", "seed=1", "--dry-run") == 0
    text = capsys.readouterr().err
    assert "FAIL" in text and "red.txt" in text and "run  " in text and "blue.txt" in text
    assert sorted(out.iterdir()) == before
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *FAST,
                 "--set", "seed=1") == 1
    assert "exists with other settings" in capsys.readouterr().err
    assert read_settings(out / "red.png")["settings"]["seed"] == 0  # not overwritten without --overwrite


def test_inputs_are_never_written_over(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(d / "a.png")
    assert batch("--preset", "enhance-gentle", "--input", str(d), "--output", str(d)) == 2
    assert "holds inputs" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "b" / "a.jpg")
    assert batch("--preset", "enhance-gentle", "--input", str(d), "--input", str(tmp_path / "b"),
                 "--output", str(tmp_path / "out")) == 2
    assert "would both write" in capsys.readouterr().err
    assert batch("--preset", "enhance-gentle", "--input", str(tmp_path / "nothing-*.png"),
                 "--output", str(tmp_path / "out")) == 2
    assert "glob matches nothing" in capsys.readouterr().err


def test_image_batch_with_a_broken_file(tmp_path, capsys):
    from clipkit.registry import get_method

    if get_method("enhance").missing():
        pytest.skip("published CLIP-LIT weights are not on this machine")
    d = tmp_path / "photos"
    d.mkdir()
    Image.new("RGB", (24, 16), (40, 30, 20)).save(d / "dark.png")
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert batch("--preset", "enhance-gentle", "--input", str(d), "--output", str(out)) == 1
    err = capsys.readouterr().err
    assert "1 done" in err and "broken.jpg" in err and "cannot read" in err
    assert read_settings(out / "dark.png")["settings"] == {"method": "enhance", "checkpoint": "clip-lit",
                                                          "strength": 0.6, "tile": 0}


def test_edit_batch_uses_masks_by_name(tmp_path, capsys):
    import numpy as np

    d, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    d.mkdir()
    masks.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (32, 24), (200, 40, 40)).save(d / f"{name}.png")
    m = Image.new("L", (32, 24), 0)
    m.paste(255, (0, 0, 16, 24))
    m.save(masks / "a.png")
    assert batch("--preset", "edit-region-prompt", "--input", str(d), "--output", str(out), "--masks", str(masks),
                 "--set", "steps=2", "--set", "cutouts=2") == 0
    a, b = (np.asarray(Image.open(out / f"{n}.png")).astype(int) for n in ("a", "b"))
    assert (a[:, 16:] == [200, 40, 40]).all() and not (a[:, :16] == [200, 40, 40]).all()
    assert not (b[:, 16:] == [200, 40, 40]).all()  # no mask: the whole image is edited
    assert read_settings(out / "a.png")["settings"]["masked"] is True
    assert batch("--preset", "generate-preview", "--input", str(d), "--output", str(out / "g"),
                 "--masks", str(masks)) == 2
    assert "takes no mask" in capsys.readouterr().err


def test_a_style_preset_can_drive_another_style_method(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(d / "sea.png")
    assert batch("--preset", "style-monet", "--method", "poda", "--input", str(d), "--output", str(tmp_path / "o"),
                 "--dry-run") == 0
    assert "preset style-monet (poda)" in capsys.readouterr().err
    assert batch("--preset", "style-monet", "--method", "enhance", "--input", str(d),
                 "--output", str(tmp_path / "o")) == 2
    assert "is for method 'clipstyler', not 'enhance'" in capsys.readouterr().err


def test_a_batch_of_samples_writes_every_image_and_resumes_by_the_set(prompts, tmp_path, capsys):
    out = tmp_path / "out"
    (prompts / "empty.txt").unlink()
    two = [*FAST, "--set", "batch=2"]
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *two) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["blue-1.png", "blue-2.png", "red-1.png", "red-2.png"]
    ref = api.run(preset="generate-preview", clip="tiny", prompt="a red circle", steps=2, size=32, cutouts=2, batch=2)
    for i in (0, 1):  # each image records its own seed and a batch of one (it re-runs alone)
        s = read_settings(out / f"red-{i + 1}.png")["settings"]
        assert (s["batch"], s["seed"] - ref.settings["seed"], s["picked"]) == (1, i, [i, 2])
        assert Image.open(out / f"red-{i + 1}.png").tobytes() == ref.images[i].tobytes()
    assert next(r for r in logs(out)[0] if r["event"] == "file")["outputs"][1].endswith("-2.png")
    capsys.readouterr()
    # a missing image of a set is made again (the whole run, same seed: the same pixels); a whole set is skipped
    (out / "red-2.png").unlink()
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *two) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().err
    assert Image.open(out / "red-2.png").tobytes() == ref.images[1].tobytes()
    # one image of a set made with other settings is a conflict for the whole set
    api.run(preset="generate-preview", clip="tiny", prompt="a blue square", steps=2, size=32, cutouts=2,
            seed=3).save(out / "blue-1.png")
    assert batch("--preset", "generate-preview", "--input", str(prompts), "--output", str(out), *two) == 1
    assert "exists with other settings" in capsys.readouterr().err
