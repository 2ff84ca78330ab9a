"""Enhancement network on the published CLIP-LIT / RAVE weights: loading, tiling, safety, real photos, CLI."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.api import enhance
from clipkit.commands.enhance import main as cli_main
from clipkit.guidance.images import pil_to_tensor, read_settings
from clipkit.methods.enhance import checkpoints
from clipkit.methods.enhance.enhance import enhance_image_tensor, load_image
from clipkit.methods.enhance.fast import FastNet, onednn_usable, pool_like_reference
from clipkit.methods.enhance.metrics import dark_region_gain, image_stats, luma
from clipkit.methods.enhance.network import EnhanceNet, apply_illumination, upsample_window
from clipkit.methods.enhance.tiling import enhance_tensor, illumination

PRESETS = Path(checkpoints.__file__).parent / "presets"
PHOTOS = checkpoints.REPO_ROOT.parent / "shared" / "images" / "backlit"
PHOTO = PHOTOS / "110_51093502029_o.jpg"
needs_weights = pytest.mark.skipif(
    not (checkpoints.weights_dir() / checkpoints.PUBLISHED["clip-lit"]).is_file(),
    reason="published weights not present in ../shared/weights (or $CLIPKIT_WEIGHTS_DIR)",
)
needs_photos = pytest.mark.skipif(not PHOTO.is_file(), reason="../shared/images/backlit not present")


@pytest.fixture(scope="module")
def photo_small() -> torch.Tensor:
    """A real back-lit photo at 1/8 size (256 x 192): fast, still mostly dark foreground under a bright sky."""
    with Image.open(PHOTO) as im:
        return pil_to_tensor(im.resize((256, 192), Image.BICUBIC))


@pytest.fixture(scope="module")
def photo_crop() -> torch.Tensor:
    """A full-resolution crop of a real photo, small enough to run both tiled and untiled."""
    return load_image(PHOTO)[..., 500:741, 300:633]


@needs_weights
@pytest.mark.parametrize("name", list(checkpoints.PUBLISHED))
def test_every_published_checkpoint_loads_with_exact_keys(name):
    path = checkpoints.resolve(name)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    net = checkpoints.load_network(name)
    assert set(net.state_dict()) == {k.removeprefix("module.") for k in raw}
    for k, v in raw.items():
        assert torch.equal(net.state_dict()[k.removeprefix("module.")], v)
    assert net.out_channels == 1 and not net.training


def test_pickles_are_loaded_weights_only(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"cond1.weight": Evil()}, f, protocol=2)
    with pytest.raises(checkpoints.CheckpointError, match="(?s)evil.pth.*weights_only=True"):
        checkpoints.load_network(bad)
    assert not marker.exists()


def test_missing_and_corrupt_files_get_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.WEIGHTS_ENV, str(tmp_path))
    missing = r"rave-unpaired.*rave_unpaired\.pth.*CLIPKIT_WEIGHTS_DIR"
    with pytest.raises(checkpoints.MissingCheckpointError, match=missing):
        checkpoints.load_network("rave-unpaired")
    with pytest.raises(checkpoints.MissingCheckpointError, match="does not exist"):
        checkpoints.load_network(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(checkpoints.CheckpointError, match="junk.safetensors.*corrupt"):
        checkpoints.load_network(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"module.cond1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(checkpoints.CheckpointError, match="not a CLIP-LIT/RAVE"):
        checkpoints.load_network(wrong)


def test_weights_dir_env_override(tmp_path, monkeypatch):
    net = EnhanceNet().init_weights(torch.Generator().manual_seed(0))
    (tmp_path / "rave").mkdir()
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "rave" / "rave_paired.pth")
    monkeypatch.setenv(checkpoints.WEIGHTS_ENV, str(tmp_path))
    loaded = checkpoints.load_network("rave-paired")
    assert torch.equal(loaded.cond1.weight, net.cond1.weight)


@needs_weights
def test_convert_to_safetensors_round_trips(tmp_path, photo_small):
    dst = checkpoints.convert("rave-unpaired", tmp_path / "rave.safetensors")
    state, meta = checkpoints.read_state_dict(dst)
    assert meta["source_sha256"] == checkpoints.sha256(checkpoints.resolve("rave-unpaired"))
    a = checkpoints.load_network("rave-unpaired")(photo_small)
    b = checkpoints.load_network(dst)(photo_small)
    assert torch.equal(a, b)


def test_upsample_window_matches_interpolate():
    c = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    for H, W, top, left, h, w in [(37, 53, 3, 10, 20, 30), (100, 7, 0, 0, 100, 7), (9, 250, 8, 249, 1, 1)]:
        full = F.interpolate(c, (H, W), mode="bilinear", align_corners=True)
        part = upsample_window(c, (top, left, h, w, H, W))
        torch.testing.assert_close(part, full[..., top : top + h, left : left + w], atol=1e-5, rtol=0)


def test_fully_convolutional_any_size():
    net = EnhanceNet().init_weights(torch.Generator().manual_seed(1))
    for shape in [(1, 3, 2, 2), (2, 3, 37, 53), (1, 3, 5, 128)]:
        out = net(torch.rand(shape, generator=torch.Generator().manual_seed(2)))
        assert out.shape == (shape[0], 1, *shape[2:]) and (out >= 0).all()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 4, 8, 8))


@needs_weights
@needs_photos
def test_tiled_agrees_with_untiled_on_a_real_photo(photo_crop):
    net = checkpoints.load_network("clip-lit")
    with torch.no_grad():
        full = net(photo_crop)
        tiled = illumination(net, photo_crop, tile=160)  # 2 x 3 tiles, ragged last row/column
        approx = illumination(net, photo_crop, tile=160, context="downscaled")
        # The context is what makes tiles agree: without the whole image's context each tile pools only itself.
        per_tile = torch.cat([net(photo_crop[..., :, :166]), net(photo_crop[..., :, 166:])], -1)
        batch = torch.cat([photo_crop, photo_crop.flip(-1)])[..., :90, :110]
        batch_full, batch_tiled = net(batch), illumination(net, batch, tile=48)
    assert (full - tiled).abs().max() < 1e-5
    assert (full - per_tile).abs().max() > 100 * (full - tiled).abs().max()
    assert (full - approx).abs().max() < 1e-2
    torch.testing.assert_close(batch_tiled, batch_full, atol=1e-5, rtol=0)
    out, _ = enhance_tensor(net, photo_crop, tile=160)
    assert (out - torch.clamp(photo_crop / full, 0, 1)).abs().max() < 1e-5  # the authors' output, to 1e-5


def lively_net(seed: int, padding_mode: str = "reflect") -> EnhanceNet:
    """Random weights at a scale that keeps activations O(1) and the illumination mostly > 0 (the authors' N(0,
    0.02) init would leave a nearly constant map, a weak test of the fast path)."""
    g = torch.Generator().manual_seed(seed)
    net = EnhanceNet(padding_mode=padding_mode)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5 if p.ndim > 1 else
                    0.1 + 0.2 * torch.rand(p.shape, generator=g))
        net.cond_add1.bias.fill_(1.0)
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize("padding_mode", ["reflect", "zeros"])
def test_fast_tiled_path_equals_the_reference_network(padding_mode):
    """clipkit's path (fused channels_last convs, zero padding repaired on image borders, tiles with the exact
    context, stem cache on and off) gives the plain network's whole-image output to 1e-5."""
    net = lively_net(3, padding_mode)
    x = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = net(x)
        assert (ref > 0).float().mean() > 0.5 and ref.std() > 0.05
        fused = [None, False] if onednn_usable(x) else [False]
        for f in fused:  # one piece, through FastNet directly
            assert (FastNet(net, fused=f)(x) - ref).abs().max() < 1e-5
        # 16 px cores: the halo (up to 17 px) is wider than a core; 2 x 1 rows x cols; all tiles at once.
        for tile, cache in [(16, 1 << 30), (16, 0), (40, 1 << 30), (40, 0), (64, 0), (1000, 0)]:
            light = illumination(net, x, tile=tile, cache_bytes=cache)
            assert light.shape == ref.shape
            assert (light - ref).abs().max() < 1e-5, (tile, cache)
        out, _ = enhance_tensor(net, x, tile=16)
    lit = (ref > 0.5).expand_as(x)  # I / L amplifies float noise where L is small (this net has no floor)
    assert (out - torch.clamp(x / ref, 0, 1))[lit].abs().max() < 1e-5
    thin = torch.rand(1, 3, 2, 37, generator=torch.Generator().manual_seed(5))  # reflect needs only 2 rows
    with torch.no_grad():
        assert (illumination(net, thin, tile=16) - net(thin)).abs().max() < 1e-5


@needs_weights
def test_tiles_report_progress_and_a_cancel_stops_between_them():
    """A tiled run reports each tile of both passes as a step (the app's percentage on a large photo); a cancel
    stops between tiles and hands back the picture untouched, marked cancelled."""
    from clipkit.guidance.runs import CancelToken
    from clipkit.methods.enhance.enhance import enhance

    x = torch.rand(1, 3, 200, 330, generator=torch.Generator().manual_seed(0))
    seen = []
    done = enhance(x, tile=160, callback=lambda info: seen.append((info.step, info.total, info.preview is None)))
    assert seen == [(k, 12, True) for k in range(1, 12)] + [(12, 12, False)]  # 2 x 3 tiles, two passes
    token = CancelToken()
    stopped = enhance(x, tile=160, cancel=token, callback=lambda info: token.cancel() if info.step == 3 else None)
    assert stopped.cancelled and torch.equal(stopped.images, x) and not done.cancelled


def test_division_is_safe_for_black_pixels_and_zero_illumination():
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    image[..., :4, :] = 0
    out = apply_illumination(image, torch.zeros(1, 1, 8, 8))
    assert torch.isfinite(out).all()
    assert (out[..., :4, :] == 0).all() and (out[..., 4:, :][image[..., 4:, :] > 0] == 1).all()
    assert torch.equal(apply_illumination(image, torch.rand(1, 1, 8, 8), strength=0.0), image)
    # A network whose illumination is exactly zero everywhere (dead ReLU): still a finite image.
    net = EnhanceNet()
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    _, rec = enhance_image_tensor(torch.zeros(1, 3, 16, 16), net, tile=None)
    assert rec["after"]["mean_rgb"] == [0.0, 0.0, 0.0]


@needs_weights
@needs_photos
@pytest.mark.parametrize("name", ["clip-lit", "rave-unpaired"])
def test_real_backlit_photo_gets_brighter_in_its_dark_regions(name, photo_small):
    out, rec = enhance_image_tensor(photo_small, name)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    dark = luma(photo_small) < 0.2
    assert dark.float().mean() > 0.15  # the photo really is back-lit
    assert dark_region_gain(photo_small, out) > 0.08  # clip-lit lifts ~0.2, rave-unpaired ~0.12
    assert rec["after"]["dark_fraction"] < 0.5 * rec["before"]["dark_fraction"]
    # The bright sky is not blown out: pixels already bright stay close to where they were.
    bright = luma(photo_small) > 0.8
    assert (luma(out)[bright] - luma(photo_small)[bright]).abs().mean() < 0.1


@needs_weights
@needs_photos
def test_strength_and_presets(photo_small):
    stats = [image_stats(enhance_image_tensor(photo_small, "clip-lit", strength=s)[0])["luminance"]
             for s in (0.0, 0.5, 1.0, 1.5)]
    assert stats[0] == image_stats(photo_small)["luminance"]
    assert stats[0] < stats[1] < stats[2] < stats[3]
    gentle = enhance(photo_small, preset="enhance-gentle")
    strong = enhance(photo_small, preset="enhance-strong")
    assert gentle.record["extras"]["after"]["luminance"] < strong.record["extras"]["after"]["luminance"]
    assert gentle.settings["strength"] == 0.6
    for name in checkpoints.PUBLISHED:
        preset = PRESETS / f"enhance-{name}.json"
        assert json.loads(preset.read_text())["settings"]["checkpoint"] == name
    after = enhance(photo_small, checkpoint="clip-lit").image
    assert after.size == (256, 192)


@needs_weights
def test_folder_cli_resumes_and_never_touches_inputs(tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        Image.fromarray((torch.rand(40, 48, 3, generator=g) * 120).byte().numpy()).save(src / f"im{i}.jpg")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    args = ["--input", str(src), "--output", str(dst), "--checkpoint", "clip-lit", "--quiet"]
    assert cli_main(args) == 0
    outs = sorted(dst.glob("*.png"))
    assert [p.name for p in outs] == ["im0.png", "im1.png"]
    meta = read_settings(outs[0])
    assert meta["settings"] == {"method": "enhance", "checkpoint": "clip-lit", "strength": 1.0, "tile": 0}
    assert meta["extras"]["after"]["luminance"] > meta["extras"]["before"]["luminance"]
    mtimes = [p.stat().st_mtime_ns for p in outs]
    assert cli_main(args) == 0 and "0 done, 2 skipped" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in outs] == mtimes
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.open(src / "im0.jpg").save(refs / "im0.png")  # a "reference" equal to the input
    assert cli_main(args + ["--output", str(tmp_path / "scored"), "--reference", str(refs)]) == 0
    assert "mean PSNR" in capsys.readouterr().err
    scored = read_settings(tmp_path / "scored" / "im0.png")["reference"]
    assert 5 < scored["psnr"] < 60 and 0 < scored["ssim"] < 1
    assert read_settings(tmp_path / "scored" / "im1.png")["reference"] == {}  # no reference for im1
    assert cli_main(args + ["--strength", "0.5"]) == 1  # other settings: a failure per file, nothing redone
    assert "exists with other settings" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in outs] == mtimes
    assert cli_main(["--input", str(src), "--output", str(src)]) == 2
    assert "holds inputs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("a.jpg", "a.png"):
        (clash / name).write_bytes((src / "im0.jpg").read_bytes())
    assert cli_main(["--input", str(clash), "--output", str(tmp_path / "clash-out")]) == 2
    assert "same output" in capsys.readouterr().err
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert cli_main(["--input", str(src), "--output", str(dst), "--preset",
                     str(PRESETS.parents[1] / "image" / "presets" / "generate-preview.json")]) == 2
    assert "not 'enhance'" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("CLIPKIT_SLOW"), reason="full-resolution run (~1 min); set CLIPKIT_SLOW=1")
@needs_weights
@needs_photos
def test_matches_the_authors_reference_outputs():
    for name, ref in {"110_51093502029_o.jpg": (0.627, 0.643, 0.627),
                      "111_51093504404_o.jpg": (0.680, 0.605, 0.599)}.items():
        out, _ = enhance_image_tensor(load_image(PHOTOS / name, exif=False), "clip-lit", tile=None)
        torch.testing.assert_close(out.mean((0, 2, 3)), torch.tensor(ref), atol=0.005, rtol=0)


def test_context_is_pooled_bit_for_bit_as_the_reference_pools():
    """The reference's float32 adaptive pooling is off the exact mean by up to ~1e-3 on a 3 MP photo, which moves
    outputs by 2.5e-5; the fast path repeats its arithmetic from channels_last features instead of averaging
    better."""
    feat = torch.randn(2, 32, 61, 97, generator=torch.Generator().manual_seed(6)) + 0.5
    for layout in (feat, feat.contiguous(memory_format=torch.channels_last)):
        for got, b in zip(pool_like_reference(layout, (1, 2, 3, 6)), (1, 2, 3, 6)):
            assert torch.equal(got, F.adaptive_avg_pool2d(feat, b))
