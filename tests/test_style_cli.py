"""Style batches and CLI on real content photos (tiny CLIP, tiny sizes): resume, skip, never overwrite inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from generators.style.batch import run_batch
from generators.style.cli import main
from guidance.errors import ParameterError
from guidance.images import read_settings
from guidance.runs import RunResult

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


def test_batch_resumes_without_redoing_finished_files(photos, tmp_path):
    calls: list[str] = []

    def run_one(image, src):
        calls.append(src.name)
        return RunResult(torch.full((1, 3, 8, 8), 0.5), {"method": "fake"})

    out = tmp_path / "out"
    job = {"method": "fake", "prompt": "fire"}
    first = run_batch(photos, out, job, run_one, progress=False)
    assert len(first.done) == 3 and not first.skipped
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / f"{PHOTOS[1].stem}.png").unlink()  # as if the first run had been interrupted there
    calls.clear()
    second = run_batch(photos, out, job, run_one, progress=False)
    assert calls == [PHOTOS[1].name]
    assert len(second.done) == 1 and len(second.skipped) == 2
    for p in out.iterdir():
        if p.stem != PHOTOS[1].stem:
            assert p.stat().st_mtime_ns == stamps[p.name]
    assert read_settings(out / f"{PHOTOS[0].stem}.png")["job"] == job
    with pytest.raises(ParameterError, match="other settings"):
        run_batch(photos, out, {**job, "prompt": "ice"}, run_one, progress=False)
    assert len(run_batch(photos, out, {**job, "prompt": "ice"}, run_one, overwrite=True, progress=False).done) == 3
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_batch_never_writes_into_the_input_folder(photos):
    before = {p.name: p.stat().st_mtime_ns for p in photos.iterdir()}
    with pytest.raises(ParameterError, match="differ from the input"):
        run_batch(photos, photos, {"method": "fake"}, lambda i, s: None, progress=False)
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
    assert main(args) == 0
    assert "0 done, 3 skipped" in capsys.readouterr().err
    net = nets / f"{PHOTOS[0].stem}.safetensors"
    assert main(["clipstyler", "--input", str(photos), "--output", str(tmp_path / "fast"), "--network", str(net),
                 "--size", "96", "--quiet"]) == 0
    assert len(list((tmp_path / "fast").glob("*.png"))) == 3


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
    assert "train-stylizer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not os.listdir(tmp_path / "x")
