"""Images at the edges: validation of tensors, PIL conversion, atomic PNG writes with settings embedded.

Inside the toolkit an image is a float tensor (B, 3, H, W) in [0, 1]; PIL appears only here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from clipkit.guidance.errors import ImageError, ParameterError

SETTINGS_KEY = "clipkit"
MAX_SIDE = 8192


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


def as_tensor(image: Image.Image | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Accept what users pass (PIL or tensor) and return a checked (B, 3, H, W) tensor."""
    if isinstance(image, Image.Image):
        t = pil_to_tensor(image)
    else:
        t = image.unsqueeze(0) if isinstance(image, torch.Tensor) and image.ndim == 3 else image
        check_range(t)
    return t.to(device) if device is not None else t


def load_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> Image.Image:
    """Open an image file as RGB; grey, palette and alpha images are converted (alpha over white)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read {path} as an image: {e}") from e
    if max(img.size) > max_side:
        raise ImageError(f"{path} is {img.size[0]}x{img.size[1]}; the largest side allowed is {max_side}")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def atomic_write(path: str | os.PathLike, write, protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write through a temp file in the same folder, then rename: a crash never leaves half a file.

    `protect` lists input paths that must never be overwritten.
    """
    path = Path(path)
    for p in protect:
        if Path(p).exists() and path.exists() and os.path.samefile(p, path):
            raise ImageError(f"refusing to write over the input file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParameterError(f"cannot create the output folder {parent}: {e.strerror or e}") from e
    if not os.access(parent, os.W_OK):
        raise ParameterError(f"cannot write into the output folder {parent} (permission denied)")
    return path


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a toolkit PNG carries (empty dict when it carries none)."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}) or {}
    return json.loads(text[SETTINGS_KEY]) if SETTINGS_KEY in text else {}


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
            return img.convert("L")
    except (ValueError, OSError, UnidentifiedImageError) as e:
        raise ImageError(f"the recorded mask cannot be decoded: {e}") from e
