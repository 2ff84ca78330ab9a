"""Live sliders from a cached network output: backlit enhancement's strength redraws from the last run's
illumination map (no second pass of the network), and what it draws is what a fresh Run at that strength gives."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from PIL import Image
from test_enhance_network import lively_net  # the tests' folder is on the path (no package)

from clipkit import api
from clipkit.guidance.errors import ParameterError
from clipkit.methods.enhance import checkpoints
from clipkit.methods.enhance import enhance as enhance_module
from clipkit.registry import get_method
from clipkit.ui.app import ClipKitApp, batch_sheet, values_to_settings


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> str:
    """A random illumination network whose map varies over the picture (mostly > 0), saved as a weights file."""
    net = lively_net(7)
    folder = tmp_path_factory.mktemp("weights")
    return os.path.realpath(checkpoints.save_network(net, folder / "random-lit.safetensors"))


def _photo(seed: int, size: tuple[int, int] = (100, 80)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 160).to(torch.uint8)  # dark-ish: room to brighten
    return Image.fromarray(pixels.numpy(), "RGB")


@pytest.fixture
def no_network(monkeypatch):
    """Counts passes of the network (any would be a recomputation the live slider must not do)."""
    calls = []
    real = enhance_module.enhance_tensor

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(enhance_module, "enhance_tensor", counted)
    return calls


@pytest.mark.parametrize("tile", [0, 64])  # 0: one piece; 64: a 100 x 80 picture in 4 tiles
def test_live_enhancement_strength_equals_a_fresh_run(tmp_path, net_file, no_network, tile):
    app = ClipKitApp(output_dir=tmp_path / "results", weights_dirs=[os.path.dirname(net_file)])
    m = get_method("enhance")
    assert m.live == ("strength",) and m.live_reuse == ("illumination",)
    photo = _photo(1)
    s = values_to_settings(m, {"checkpoint": net_file, "strength": 1.0, "tile": tile})
    result = list(app.run_stream(m, s, {"image": photo}))[-1][1]
    assert len(no_network) == 1
    (entry,) = app.save_results(m, result)
    assert not list((tmp_path / "results").glob("*.safetensors"))  # the map stays in memory, not beside the PNG
    kept = {"path": entry.path, "artifacts": app.live.keep(m, result)}
    assert set(kept["artifacts"]) == {"illumination"}

    fresh = {}
    for strength in (0.0, 0.35, 1.0, 1.7):
        fresh[strength] = api.run("enhance", dataclasses.replace(s, strength=strength), image=photo)
    assert len(no_network) == 5
    for strength, want in fresh.items():
        moved = dataclasses.replace(s, strength=strength)
        live = app.live.render(m, moved, {"image": photo}, entry.path, kept["artifacts"])
        assert torch.equal(live.tensors, want.tensors), strength  # the same pixels as a fresh Run
        assert live.record["extras"]["illumination_reused"] is True
        (before, after), status = app.live_update(m, moved, {"image": photo}, entry, kept)
        assert status.startswith("Live: Strength") and "ms" in status
        assert after.tobytes() == batch_sheet(want.tensors).tobytes()
        assert before.tobytes() == photo.tobytes()  # strength 0: the photo itself
    assert len(no_network) == 5  # no live redraw ran the network
    assert not torch.equal(fresh[0.35].tensors, fresh[1.7].tensors)  # the strengths really differ

    # another session's (or an older run's) state is not this result's: the map is computed again, still right
    stale = {"path": str(tmp_path / "other.png"), "artifacts": kept["artifacts"]}
    (_, after), _ = app.live_update(m, dataclasses.replace(s, strength=0.35), {"image": photo}, entry, stale)
    assert len(no_network) == 6 and after.tobytes() == batch_sheet(fresh[0.35].tensors).tobytes()


def test_an_illumination_map_is_refused_for_another_picture_or_other_tiles(net_file):
    photo = _photo(2, (72, 72))
    first = api.run("enhance", image=photo, checkpoint=net_file)
    light = first.run.extras["illumination"]
    assert light.kind == "map/illumination" and light.tensors["light"].shape == (1, 1, 72, 72)
    assert "illumination" not in first.record["extras"]  # in memory only: the record stays JSON
    with pytest.raises(ParameterError, match="another picture"):
        api.run("enhance", image=_photo(3, (72, 72)), checkpoint=net_file, illumination=light)
    with pytest.raises(ParameterError, match="other weights or tiles"):
        api.run("enhance", image=photo, checkpoint=net_file, tile=64, illumination=light)
    again = api.run("enhance", image=photo, checkpoint=net_file, strength=0.5, illumination=light)
    assert torch.equal(again.tensors, api.run("enhance", image=photo, checkpoint=net_file, strength=0.5).tensors)


def test_the_enhance_tab_shows_no_file_box_for_the_map(tmp_path):
    from clipkit.ui.app import build_app

    demo = build_app(test_models=True, output_dir=tmp_path)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert "enhance-strength" in ids and "enhance-illumination" not in ids
    assert "stylemc-direction" in ids  # a saved artifact keeps its upload box


def test_a_random_seed_is_one_the_page_keeps_exactly_and_a_live_slider_takes_the_drawn_one(tmp_path):
    """-1 draws a seed below 2**52 (the page's numbers are doubles: a 63-bit seed would come back as another one),
    and with -1 still in the box a live slider redraws the last run, whose seed it recorded."""
    from clipkit.ui.app import BROWSER_SEEDS, draw_seed

    m = get_method("stylize")
    s = values_to_settings(m, {**api.settings_dict(m.defaults()), "size": 48, "seed": -1})
    drawn = [draw_seed(s).seed for _ in range(200)]
    assert all(0 <= d < BROWSER_SEEDS == 2**52 for d in drawn) and len(set(drawn)) > 190
    assert float(drawn[0]) == drawn[0] and draw_seed(dataclasses.replace(s, seed=5)).seed == 5
    app = ClipKitApp(test_models=True, output_dir=tmp_path)
    photo = Image.new("RGB", (48, 40), (90, 140, 200))
    ran = draw_seed(s)
    (entry,) = app.save_results(m, list(app.run_stream(m, ran, {"image": photo}))[-1][1])
    assert entry.record["settings"]["seed"] == ran.seed
    _, status = app.live_update(m, dataclasses.replace(s, strength=0.5), {"image": photo}, entry)
    assert status.startswith("Live")
    _, status = app.live_update(m, dataclasses.replace(s, strength=0.5, seed=ran.seed + 1), {"image": photo}, entry)
    assert "Changed since the last run: Seed" in status
