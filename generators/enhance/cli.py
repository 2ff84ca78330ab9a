"""Enhance a folder of back-lit photos.

``python -m generators.enhance.cli --checkpoint clip-lit --input DIR --output DIR``

Writes ``OUTPUT/<name>.png`` with the settings and statistics embedded as PNG text
(``guidance.images.save_image``). Resumable: an output that already holds the same settings is skipped; one made
with other settings stops the run unless ``--overwrite``. Inputs are never written: the output folder must differ
from the input folder and no output may resolve to an input file. Writes are atomic (temporary file + rename), so an
interrupted run leaves no half files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from guidance.errors import ParameterError
from guidance.images import pil_to_tensor, plan_outputs, read_settings, save_image

from .api import enhance, preset_settings
from .api import load_image as load_image_tensor
from .data import list_images
from .metrics import psnr, ssim


def settings_of(path: Path) -> dict | None:
    """Settings embedded in one of our outputs, or None if it has none (or is unreadable)."""
    try:
        return read_settings(path).get("settings")
    except (OSError, ValueError):
        return None


def reference_metrics(image: Image.Image, folder: Path, stem: str) -> dict:
    """PSNR / SSIM of the saved 8-bit result against ``folder/<stem>.*`` when that reference exists (same size)."""
    refs = [p for p in list_images(folder, required=False) if p.stem == stem]
    if not refs:
        return {}
    out, ref = pil_to_tensor(image), load_image_tensor(refs[0])
    if out.shape != ref.shape:
        return {"reference_error": f"size {tuple(ref.shape[-2:])} differs from the result's {tuple(out.shape[-2:])}"}
    return {"reference": str(refs[0]), "psnr": round(psnr(out, ref), 3), "ssim": round(ssim(out, ref), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m generators.enhance.cli", description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, type=Path, help="folder of images (not searched recursively)")
    ap.add_argument("--output", required=True, type=Path, help="folder for the PNG results")
    ap.add_argument("--checkpoint", default=None, help="published name (clip-lit, rave-unpaired, ...) or file")
    ap.add_argument("--preset", default=None, help="gentle, strong, or a checkpoint preset (presets/enhance-*.json)")
    ap.add_argument("--strength", type=float, default=None, help="0 = unchanged, 1 = as trained (default)")
    ap.add_argument("--tile", default="auto", help="tile core size in pixels, 'none', or 'auto' (default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overwrite", action="store_true", help="redo outputs made with other settings")
    ap.add_argument("--reference", type=Path, default=None,
                    help="folder of well-lit references (same file stem): adds PSNR and SSIM to each record")
    args = ap.parse_args(argv)

    if not args.input.is_dir():
        raise SystemExit(f"input folder {args.input} does not exist")
    if args.output.resolve() == args.input.resolve():
        raise SystemExit("the output folder must differ from the input folder (inputs are never overwritten)")
    preset = preset_settings(args.preset) if args.preset else {}
    tile = None if args.tile == "none" else ("auto" if args.tile == "auto" else int(args.tile))
    settings = {
        "checkpoint": args.checkpoint or preset.get("checkpoint", "clip-lit"),
        "strength": args.strength if args.strength is not None else float(preset.get("strength", 1.0)),
    }
    inputs = list_images(args.input, required=False)
    args.output.mkdir(parents=True, exist_ok=True)
    done = skipped = 0
    scores: list[float | None] = []
    try:
        pairs = plan_outputs(inputs, args.output)
    except ParameterError as e:
        raise SystemExit(str(e)) from e
    for src, dst in tqdm(pairs, desc="enhance", unit="img"):
        if dst.exists() and not args.overwrite:
            old = settings_of(dst)
            if old == settings:
                skipped += 1
                continue
            raise SystemExit(f"{dst} exists with other settings ({old}); pass --overwrite or another --output")
        image, record = enhance(src, settings["checkpoint"], tile=tile, strength=settings["strength"],
                                device=args.device)
        record["input"] = str(src)
        if args.reference is not None:
            record.update(reference_metrics(image, args.reference, src.stem))
            scores.append(record.get("psnr"))
        save_image(image, dst, {"settings": settings, "record": record}, protect=tuple(inputs))
        done += 1
    print(f"enhanced {done}, skipped {skipped} already done, into {args.output}", file=sys.stderr)
    measured = [x for x in scores if x is not None]
    if measured:
        print(f"mean PSNR {sum(measured) / len(measured):.2f} dB over {len(measured)} images with references",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
