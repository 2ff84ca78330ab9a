"""The method scoreboard: its pixel checks read world renders the way a person would, its task lists are fixed,
and the scorer runs end to end on tiny tasks (so it cannot rot between full boards)."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipkit.scoreboard import checks
from clipkit.scoreboard.score import ROWS, load_judge, run_board, score_images
from clipkit.scoreboard.tasks import (
    STYLE_PROMPTS,
    TASKS_PER_ROW,
    TASKS_VERSION,
    edit_tasks,
    input_image,
    task_mask,
    tasks_for,
)
from clipkit.world.scene import SHAPES, ObjectSpec, SceneSpec, render, render_batch, sample_scene


def one(shape: str, colour: str, background: str = "plain", ground: str = "white", lighting: str = "bright",
        angle: float = 0.0, size: str = "large") -> torch.Tensor:
    return render(SceneSpec((ObjectSpec(shape, colour, size, "centre", angle=angle),), background, ground, lighting))


def test_a_red_circle_reads_red_and_circle():
    reading = checks.read_object(one("circle", "red"))
    assert (reading.colour, reading.shape, reading.size, reading.position) == ("red", "circle", "large", "centre")
    assert reading.iou > 0.9


def test_a_blue_square_is_not_read_as_a_circle():
    for angle in (0.0, 0.4, 0.785):  # upright, tilted, and a diamond
        reading = checks.read_object(one("square", "blue", "stripes", "yellow", angle=angle))
        assert reading.shape == "square" and reading.colour == "blue", (angle, reading)
        assert reading.fit.ious["circle"] < reading.fit.ious["square"] - 0.05, reading.fit.ious


def test_every_shape_and_ground_on_seeded_renders():
    """The checks must read most random bright renders right (any shape, ground, tilt and size); a check that
    always answers the commonest value, or reads the whole frame's mean colour, fails this."""
    g = torch.Generator().manual_seed(7)
    scenes = [replace(sample_scene(g, n_objects=1), lighting="bright") for _ in range(24)]
    scenes = [s for s in scenes if s.bg_colour != s.objects[0].colour]
    images = render_batch(scenes, 64)
    readings = [checks.read_object(im) for im in images]
    colour = sum(r.colour == s.objects[0].colour for r, s in zip(readings, scenes)) / len(scenes)
    shape = sum(r.shape == s.objects[0].shape for r, s in zip(readings, scenes)) / len(scenes)
    assert colour >= 0.9 and shape >= 0.85, (colour, shape)
    assert len({r.shape for r in readings}) >= 4  # it tells shapes apart, not one answer for all


def test_segmentation_matches_the_rendered_silhouette():
    scene = SceneSpec((ObjectSpec("star", "green", "large", "left", angle=0.3),), "checker", "purple", "dark")
    mask = checks.segment(render(scene))
    alone = render_batch([SceneSpec((ObjectSpec("star", "white", "large", "left", angle=0.3),), "plain", "black",
                                    "bright")])[0, 0]
    truth = alone > alone.min() + 0.35
    iou = float((mask & truth).sum() / (mask | truth).sum())
    assert iou > 0.85, iou


def test_a_field_or_an_empty_ground_is_no_shape():
    assert checks.read_object(torch.full((3, 64, 64), 0.5)).shape is None
    field = one("circle", "red").clone()
    field[:] = torch.tensor([0.88, 0.1, 0.1]).view(3, 1, 1)  # a red field, as pixel guidance paints
    assert checks.read_object(field).shape is None


def test_shape_fits_each_world_shape_at_a_turn():
    for shape in SHAPES:
        reading = checks.read_object(one(shape, "orange", "gradient", "blue", angle=1.0))
        assert reading.shape == shape, (shape, reading.fit.ious)


def test_task_lists_are_fixed_and_large_enough():
    assert TASKS_VERSION == 1
    for name in ROWS:
        tasks = tasks_for(name)
        assert len(tasks) >= TASKS_PER_ROW >= 20
        assert len({t.id for t in tasks}) == len(tasks)
        assert all(t.target in t.captions for t in tasks)
        assert tasks == tasks_for(name)  # deterministic
    t2i = tasks_for("generate")
    assert any(t.heldout for t in t2i) and any(not t.heldout for t in t2i)
    assert tasks_for("diffusion") == t2i
    # the first edit, as version 1 fixed it (a changed list must bump TASKS_VERSION)
    first = edit_tasks()[0]
    assert (first.attribute, first.prompt, first.source_prompt, first.masked) == (
        "colour", "a yellow square", "an orange square", True)
    kinds = {t.attribute for t in tasks_for("edit-prompt")[:4]}
    assert kinds == {"colour", "shape", "background", "lighting"}


def test_style_prompts_are_the_stylizer_s():
    path = Path(__file__).resolve().parents[1] / "clipkit" / "methods" / "style" / "world_prompts.txt"
    if not path.exists():
        pytest.skip("world_prompts.txt moved")
    shipped = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    assert set(STYLE_PROMPTS) <= shipped


def test_a_render_of_the_target_succeeds_and_the_input_does_not():
    judge = load_judge()
    for task in tasks_for("edit-prompt")[:4] + tasks_for("enhance-rave")[:2]:
        target = render_batch([task.target_scene], 64)
        hit, miss = score_images(torch.cat([target, input_image(task)]), task, judge)
        assert hit.success, (task.id, hit)
        assert not miss.judge_ok, (task.id, miss)
    mask = task_mask(edit_tasks()[0])
    assert mask is not None and 0.05 < float(mask.mean()) < 0.6


def test_board_runs_two_tiny_tasks(tmp_path):
    """The whole scorer, end to end, on one text-to-image and one masked edit task with the tiny guide."""
    board = run_board(["generate", "edit-prompt"], clip="tiny", limit=1, out=tmp_path, degraded_n=2, log=None,
                      overrides={"generate": {"steps": 2, "size": 32, "cutouts": 2},
                                 "edit": {"steps": 2, "cutouts": 2}})
    assert [r.row for r in board.rows] == ["generate", "edit-prompt"]
    gen, edit = board.rows
    assert gen.tasks == edit.tasks == 1 and gen.errors == edit.errors == 0
    assert gen.preservation is None and edit.preservation is not None
    assert edit.masked_l2 == 0.0  # the first edit is masked: pixels outside stay exactly
    assert math.isfinite(gen.gain) and math.isfinite(edit.seconds)
    text = (tmp_path / "scoreboard.md").read_text()
    assert "| generate | 1 |" in text and "| edit-prompt | 1 |" in text and "degraded" in text
    assert f"tasks version {TASKS_VERSION}" in text
    rows = list(csv.DictReader((tmp_path / "scoreboard-tasks.csv").open()))
    assert [r["task"] for r in rows] == ["t2i-00", "edit-00"]
    assert (tmp_path / "scoreboard-images" / "edit-prompt.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_stylegan_rows_start_from_one_inversion_of_the_task_input(tmp_path, monkeypatch):
    """The five StyleGAN rows on the first edit task with the tiny guide: each runs from the inverted input (its
    baseline is the reconstruction, shared by every row), the mapper row trains and then applies, and no row
    claims a masked L2 (StyleGAN edits take no mask)."""
    from clipkit.methods.stylegan.editing import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    names = ["styleclip-optimise", "styleclip-mapper", "global-directions", "stylemc", "nada"]
    board = run_board(names, clip="tiny", limit=1, out=None, degraded_n=2, log=None,
                      budget={"invert": {"steps": 3}},
                      overrides={"styleclip_optimise": {"steps": 2}, "styleclip_mapper_train": {"steps": 2},
                                 "global_directions": {"stat_samples": 256, "stat_images": 1},
                                 "stylemc": {"find_seeds": 4, "batch": 2}, "nada": {"steps": 2}})
    assert [r.row for r in board.rows] == names
    for row in board.rows:
        assert row.tasks == 1 and row.errors == 0, (row.row, [t.error for t in board.tasks])
        assert row.preservation is not None and row.masked_l2 is None
    baselines = {(t.baseline_top1, t.baseline_p) for t in board.tasks}
    assert len(baselines) == 1  # one reconstruction, scored once, is every row's "before"


def test_a_board_of_some_rows_merges_into_the_last_one(tmp_path):
    """Running one row with ``merge`` keeps the other rows of the board already there, task for task."""
    tiny = {"generate": {"steps": 2, "size": 32, "cutouts": 2}, "edit": {"steps": 2, "cutouts": 2}}
    first = run_board(["generate", "edit-prompt"], clip="tiny", limit=1, out=tmp_path, degraded_n=2, log=None,
                      overrides=tiny, save_images=False)
    again = run_board(["edit-prompt"], clip="tiny", limit=1, out=tmp_path, degraded_n=2, log=None,
                      overrides=tiny, save_images=False, merge=True, seed=5)
    assert [r.row for r in again.rows] == ["generate", "edit-prompt"]
    old, kept = first.row("generate"), again.row("generate")  # read back from the CSV as it was scored
    assert (kept.tasks, kept.errors, kept.success, kept.preservation) == (old.tasks, old.errors, old.success,
                                                                          old.preservation)
    assert kept.gain == pytest.approx(old.gain, abs=1e-4)
    assert [t.seed for t in again.tasks] == [0, 5]
    text = (tmp_path / "scoreboard.md").read_text()
    assert "rows generate from the board of commit" in text
