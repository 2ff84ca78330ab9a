"""Bad input gets a clear, specific error; outputs carry settings and never replace inputs."""

import pytest
import torch
from PIL import Image

from clipkit.guidance.clip import load_clip, resolve_weights, tiny_clip
from clipkit.guidance.errors import CheckpointError, ImageError, ModelNameError, PromptError, WeightsNotFoundError
from clipkit.guidance.guide import Guide, PromptTerm
from clipkit.guidance.images import as_tensor, load_image, pil_to_tensor, read_settings, save_image
from clipkit.guidance.prompts import parse_prompts


def test_missing_weight_file_names_it(tmp_path):
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(WeightsNotFoundError, match="ViT-B-32.pt"):
        load_clip("ViT-B-32", str(missing), device="cpu")


def test_published_tag_without_cache_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="no model hub") as e:
        resolve_weights("ViT-B-32", "openai")
    assert "--clip-weights" in str(e.value)


def test_unknown_tag_lists_known_tags():
    with pytest.raises(WeightsNotFoundError, match="Known tags:.*openai"):
        resolve_weights("ViT-B-32", "no-such-tag")


def test_unknown_model_name_lists_names():
    with pytest.raises(ModelNameError, match="unknown CLIP model 'ViT-Z-99'.*ViT-B-32"):
        load_clip("ViT-Z-99", device="cpu")


def test_model_without_packaged_weights():
    with pytest.raises(WeightsNotFoundError, match="ships none"):
        resolve_weights("tiny-clip", None)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_clip("tiny-clip", str(bad), device="cpu")
    bad_pt = tmp_path / "broken.pt"
    bad_pt.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_clip("tiny-clip", str(bad_pt), device="cpu")


def test_checkpoint_of_another_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="other.safetensors"):
        load_clip("tiny-clip", str(path), device="cpu")


def test_own_checkpoint_roundtrip(tmp_path):
    from safetensors.torch import save_file

    clip = tiny_clip(3)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))
    loaded = load_clip("tiny-clip", str(path), device="cpu")
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(clip.encode_image(img), loaded.encode_image(img), atol=1e-6)


@pytest.mark.parametrize("spec", ["", "   ", "a cat | ", ":1"])
def test_empty_prompts(spec):
    with pytest.raises(PromptError, match="empty prompt"):
        parse_prompts(spec)


def test_weighted_prompt_parsing():
    p = parse_prompts("a watercolor painting:1 | blurry:-0.5 | style: art deco")
    assert [(x.text, x.weight) for x in p] == [("a watercolor painting", 1.0), ("blurry", -0.5),
                                               ("style: art deco", 1.0)]
    with pytest.raises(PromptError, match="out of range"):
        parse_prompts("a cat:1e9")


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 32, 32), r"shape \(B, 3, H, W\)"),
        (torch.rand(1, 4, 32, 32), "3 RGB channels"),
        (torch.randint(0, 255, (1, 3, 8, 8)), "float"),
    ],
)
def test_wrong_tensor_shapes(bad, message):
    clip = tiny_clip(0)
    with pytest.raises(ImageError, match=message):
        Guide(clip, [PromptTerm(prompts="a cat")])(bad)


def test_wrong_range_says_divide_by_255():
    with pytest.raises(ImageError, match="divide by 255"):
        as_tensor(torch.rand(1, 3, 8, 8) * 255)


def test_non_rgb_image_is_refused_with_hint():
    with pytest.raises(ImageError, match="mode is 'L'.*convert"):
        pil_to_tensor(Image.new("L", (8, 8)))
    with pytest.raises(ImageError, match="mode is 'RGBA'"):
        as_tensor(Image.new("RGBA", (8, 8)))


def test_load_image_converts_alpha_and_rejects_non_images(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(p)
    assert load_image(p).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(txt)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_png_carries_settings_and_inputs_are_protected(tmp_path):
    img = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = save_image(img, tmp_path / "out.png", {"method": "generate", "seed": 3})
    assert read_settings(out) == {"method": "generate", "seed": 3}
    before = out.read_bytes()
    with pytest.raises(ImageError, match="input"):
        save_image(img * 0.5, out, {"x": 1}, protect=(out,))
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ImageError, match="PNG"):
        save_image(img, tmp_path / "out.jpg")


def test_published_tag_resolves_from_local_hf_cache(monkeypatch, tmp_path):
    """A checkpoint already in the Hugging Face cache is found offline, and the tag's settings travel with it."""
    from clipkit.guidance import clip as clip_mod

    repo_dir = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    snap = repo_dir / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("abc123")
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"stand-in")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    resolved = clip_mod.resolve_weights("ViT-B-32", "openai")
    assert resolved.path == snap / "open_clip_pytorch_model.bin"
    assert resolved.tag_cfg["quick_gelu"] is True
    # the stand-in is no checkpoint: loading it must fail with the file named, not a hub traceback
    with pytest.raises(CheckpointError, match="open_clip_pytorch_model.bin"):
        load_clip("ViT-B-32", "openai", device="cpu")
