"""Images at the edges: validation of tensors, PIL conversion, atomic PNG writes with settings embedded.

Inside the toolkit an image is a float tensor (B, 3, H, W) in [0, 1]; PIL appears only here.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from clipkit.guidance.errors import ImageError, ParameterError
from clipkit.guidance.files import atomic_write, check_output_dir
from clipkit.guidance.limits import check_image_size, loads_json

SETTINGS_KEY = "clipkit"
MAX_SIDE = 8192
ORIENTATION = 0x0112  # the EXIF tag cameras set instead of turning the pixels
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Fail early, with the expected shape in the message, instead of deep inside a network."""
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImageError(f"{name} must have shape (B, 3, H, W) with 3 RGB channels, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ImageError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.shape[-1] < 1 or images.shape[-2] < 1:
        raise ImageError(f"{name} is empty: {tuple(images.shape)}")
    return images


def check_range(images: torch.Tensor, name: str = "images", tol: float = 1e-3) -> torch.Tensor:
    """Inputs from users must be in [0, 1]; a 0..255 tensor is the usual mistake, so say so."""
    check_images(images, name)
    lo, hi = float(images.min()), float(images.max())
    if lo < -tol or hi > 1 + tol:
        hint = " (looks like 0..255: divide by 255)" if hi > 2 else ""
        raise ImageError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
    if not torch.isfinite(images).all():
        raise ImageError(f"{name} contains NaN or Inf")
    return images


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> (1, 3, H, W) float in [0, 1]. Other modes are refused, not guessed."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ImageError(
            f"image mode is '{image.mode}', expected 'RGB'; convert it first (image.convert('RGB')) "
            "or load it with guidance.images.load_image, which converts grey, palette and alpha images"
        )
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def tensor_to_pil(images: torch.Tensor) -> Image.Image:
    """The first image of a batch (or a (3, H, W) tensor) as an 8-bit RGB PIL image."""
    t = images[0] if images.ndim == 4 else images
    arr = t.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def check_still(image: Image.Image, name: str = "image") -> Image.Image:
    """Refuse an animated image (GIF, APNG, WebP, multi-page TIFF) instead of silently taking its first frame."""
    frames = getattr(image, "n_frames", 1) or 1
    if frames > 1:
        raise ImageError(f"{name} has {frames} frames (an animation or a multi-page file); clipkit works on still "
                         "images: save the frame you want as a PNG and pass that")
    return image


def oriented(image: Image.Image) -> Image.Image:
    """The picture as the camera meant it: turned by its EXIF orientation tag (the tag is dropped), else as is."""
    try:
        turn = image.getexif().get(ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: the pixels are still good
        return image
    return ImageOps.exif_transpose(image) if turn not in (None, 1) else image


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale ("I;16", "I": what 16-bit PNGs and TIFFs open as) scaled to 8-bit "L" (65535 -> 255);
    PIL's own convert would clip every value over 255 to white. Other modes pass unchanged."""
    if image.mode not in _SIXTEEN_BIT:
        return image
    arr = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL image input as 8-bit RGB: checked (a still image within the pixel limit), turned by its EXIF
    orientation, 16-bit scaled to 8-bit, transparency over white. Files (``load_image``), the API and the app
    all go through it."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"{name}: expected a PIL image, got {type(image).__name__}")
    check_still(image, name)
    check_image_size(*image.size, name=name)
    image = to_8bit(oriented(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def to_grey(image: Image.Image, name: str = "mask") -> Image.Image:
    """A mask input as 8-bit "L" (white = edit), checked and oriented like ``to_rgb``."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"{name}: expected a PIL image, got {type(image).__name__}")
    check_still(image, name)
    check_image_size(*image.size, name=name)
    image = to_8bit(oriented(image))
    return image if image.mode == "L" else image.convert("L")


def mask_input(mask: Image.Image | torch.Tensor) -> torch.Tensor:
    """A mask as users pass it (PIL, checked and oriented like ``to_grey``; or a tensor) as float values in [0, 1],
    1 = may change; ``regions.prepare_mask`` then checks its shape and values against the picture."""
    if isinstance(mask, Image.Image):
        return torch.from_numpy(np.asarray(to_grey(mask), dtype=np.float32) / 255.0)
    return mask


def check_input_tensor(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """An image tensor a user passed: its shape, then its size (before any pass over its values), then its range."""
    check_images(images, name)
    check_image_size(images.shape[-1], images.shape[-2], name=name, count=images.shape[0])
    return check_range(images, name)


def as_tensor(image: Image.Image | torch.Tensor, device: torch.device | str | None = None,
              name: str = "images") -> torch.Tensor:
    """Accept what users pass (PIL or tensor) and return a checked (B, 3, H, W) tensor (the pixel limit and the
    smallest size apply; a PIL image is turned by its EXIF orientation)."""
    if isinstance(image, Image.Image):
        check_still(image, name)
        check_image_size(*image.size, name=name)
        t = pil_to_tensor(oriented(image))
    else:
        t = image.unsqueeze(0) if isinstance(image, torch.Tensor) and image.ndim == 3 else image
        check_input_tensor(t, name)
    return t.to(device) if device is not None else t


def open_image(path: str | os.PathLike, max_side: int = MAX_SIDE, name: str | None = None) -> Image.Image:
    """An image file, decoded after checking from its header (before decoding) that it is one still image within
    the size limits."""
    path = Path(path)
    label = name or str(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: {e}; resize it first") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read {path} as an image: {e}") from e
    if max(img.size) > max_side:
        raise ImageError(f"{path} is {img.size[0]}x{img.size[1]}; the largest side allowed is {max_side}")
    check_image_size(*img.size, name=label)
    check_still(img, label)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"cannot read {path} as an image: {e}") from e
    return img


def load_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> Image.Image:
    """An image file as RGB (``to_rgb``: orientation applied, 16-bit scaled, alpha over white; limits checked)."""
    return to_rgb(open_image(path, max_side), str(path))


def load_mask(path: str | os.PathLike) -> Image.Image:
    """A mask file as 8-bit "L" (white = edit), oriented and checked like an image."""
    return to_grey(open_image(path), str(path))


def save_image(
    image: Image.Image | torch.Tensor,
    path: str | os.PathLike,
    settings: dict[str, Any] | None = None,
    protect: tuple[str | os.PathLike, ...] = (),
) -> Path:
    """Save as PNG with the run's settings as JSON in a text chunk, so the output can be reproduced."""
    pil = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    info = PngImagePlugin.PngInfo()
    if settings is not None:
        info.add_text(SETTINGS_KEY, json.dumps(settings, sort_keys=True, default=str))
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImageError(f"outputs are written as PNG (settings are embedded); use a .png name, not {path.name}")
    return atomic_write(path, lambda f: pil.save(f, format="PNG", pnginfo=info), protect)


def plan_outputs(inputs: list[Path], out_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(input, out_dir/<stem>.png) pairs for a folder job; refuses outputs that are inputs or that two inputs share."""
    out_dir = Path(out_dir)
    in_set = {Path(p).resolve() for p in inputs}
    pairs: list[tuple[Path, Path]] = []
    by_output: dict[Path, Path] = {}
    for p in map(Path, inputs):
        out = out_dir / f"{p.stem}.png"
        if out.resolve() in in_set:
            raise ParameterError(f"refusing to write {out}: it is an input file (choose another output folder)")
        if out in by_output:
            raise ParameterError(f"{by_output[out]} and {p} would both write the same output {out} "
                                 "(same name, different extension); rename one or run them apart")
        by_output[out] = p
        pairs.append((p, out))
    return pairs


def numbered_outputs(path: str | os.PathLike, count: int) -> list[Path]:
    """Where a run's `count` images go: `path` itself for one, else <stem>-1 ... <stem>-N beside it (the CLI and
    batch jobs name a batch of samples alike)."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(count)]


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output that could not be written: not a .png (the settings travel in PNG text
    chunks), an existing folder, or a folder that cannot be created or written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"output {path} must be a .png file (the settings travel inside the PNG)")
    if path.is_dir():
        raise ParameterError(f"output {path} is a folder; name a .png file inside it")
    check_output_dir(path.parent)
    return path


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a toolkit PNG carries (empty dict when it carries none)."""
    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}) or {}
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from e
    return loads_json(text[SETTINGS_KEY], f"{path}: embedded settings") if SETTINGS_KEY in text else {}


def encode_mask(mask: torch.Tensor) -> str:
    """A region mask as base64 8-bit PNG text, so a result's settings record carries the mask it was made with.

    Masks are inputs as much as settings: without it an edit cannot be reproduced from its output."""
    m = mask.detach().float().cpu()
    while m.ndim > 2:
        m = m[0]
    buf = io.BytesIO()
    Image.fromarray((m.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L").save(buf, format="PNG",
                                                                                      optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_mask(text: str) -> Image.Image:
    """The mask `encode_mask` wrote, as an "L" image (white = edited)."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
            check_image_size(*img.size, name="the recorded mask")
            return img.convert("L")
    except ImageError:
        raise
    except (ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageError(f"the recorded mask cannot be decoded: {e}") from e
