"""Style batches and CLI on real content photos (tiny CLIP, tiny sizes): resume, skip, never overwrite inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipkit.commands.style import main
from clipkit.guidance.images import read_settings

CONTENT = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "content"
PHOTOS = sorted(CONTENT.glob("*.jp*g"))[:3] if CONTENT.is_dir() else []
TINY = ["--model", "tiny-clip", "--pretrained", "random", "--quiet"]
pytestmark = pytest.mark.skipif(not PHOTOS, reason=f"content photos not found in {CONTENT}")


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A folder of links to three real photos (the photos themselves stay in ../shared)."""
    d = tmp_path / "in"
    d.mkdir()
    for p in PHOTOS:
        (d / p.name).symlink_to(p)
    return d


def test_cli_never_writes_into_the_input_folder(photos, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in photos.iterdir()}
    assert main(["poda", "--input", str(photos), "--output", str(photos), "--prompt", "snow", *TINY]) == 2
    assert "holds inputs" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in photos.iterdir()} == before


def test_cli_clipstyler_optimise_save_resume_and_fast_mode(photos, tmp_path, capsys):
    out, nets = tmp_path / "cs", tmp_path / "nets"
    args = ["clipstyler", "--input", str(photos), "--output", str(out), "--preset", "van-gogh", "--size", "64",
            "--steps", "2", "--crop-size", "32", "--num-crops", "4", "--content-net", "clip",
            "--save-networks", str(nets), *TINY]
    assert main(args) == 0
    assert "3 done" in capsys.readouterr().err
    rec = read_settings(out / f"{PHOTOS[0].stem}.png")
    assert rec["settings"]["prompt"] == "starry night by Vincent van Gogh"  # from the preset
    assert rec["settings"]["content_features"] == "clip-early-layers" and rec["settings"]["steps"] == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / f"{PHOTOS[1].stem}.png").unlink()  # as if the first run had been interrupted there
    assert main(args) == 0
    assert "1 done, 2 skipped" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.glob("*.png") if p.stem != PHOTOS[1].stem)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main([*args, "--steps", "3"]) == 1  # other settings: every file fails, nothing is redone
    assert "3 failed" in capsys.readouterr().err and not list(out.glob(".*.tmp"))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    net = nets / f"{PHOTOS[0].stem}.safetensors"
    fast = ["clipstyler", "--input", str(photos), "--output", str(tmp_path / "fast"), "--network", str(net),
            "--size", "96", "--quiet"]
    assert main(fast) == 0 and "3 done" in capsys.readouterr().err
    assert len(list((tmp_path / "fast").glob("*.png"))) == 3
    assert read_settings(tmp_path / "fast" / f"{PHOTOS[2].stem}.png")["settings"]["mode"] == "fast"
    assert main(fast) == 0 and "0 done, 3 skipped" in capsys.readouterr().err


def test_cli_train_stylizer_then_stylize(photos, tmp_path, capsys):
    ckpt = tmp_path / "st.safetensors"
    train = ["train-stylizer", "--content", str(photos), "--out", str(ckpt), "--prompts", "fire|ice",
             "--size", "48", "--crop-size", "24", "--num-crops", "2", "--batch", "1", "--checkpoint-every", "2", *TINY]
    assert main([*train, "--steps", "2"]) == 0
    assert main([*train, "--steps", "3"]) == 0
    assert "steps 2..3" in capsys.readouterr().err  # resumed from the step-2 checkpoint
    out = tmp_path / "ff"
    assert main(["stylize", "--input", str(photos), "--output", str(out), "--checkpoint", str(ckpt),
                 "--prompt", "fire", "--size", "64", "--quiet"]) == 0
    rec = read_settings(out / f"{PHOTOS[0].stem}.png")
    assert rec["settings"]["method"] == "stylize" and rec["settings"]["trained_steps"] == 3


def test_cli_poda_writes_previews_and_statistics(photos, tmp_path):
    stats = tmp_path / "pin.safetensors"
    assert main(["poda", "--input", str(photos), "--output", str(tmp_path / "poda"), "--prompt", "snowy winter",
                 "--size", "64", "--steps", "3", "--preview-steps", "2", "--save-stats", str(stats), *TINY]) == 0
    assert len(list((tmp_path / "poda").glob("*.png"))) == 3 and stats.is_file()


def test_cli_reports_errors_as_messages(photos, tmp_path, capsys):
    assert main(["stylize", "--input", str(photos), "--output", str(tmp_path / "x"),
                 "--checkpoint", str(tmp_path / "missing.safetensors"), "--quiet"]) == 2
    assert "clipkit train stylizer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not os.listdir(tmp_path / "x")
