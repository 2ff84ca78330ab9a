"""Enhance a folder of back-lit photos.

``clipkit enhance --checkpoint clip-lit --input DIR --output DIR``

The ``enhance`` method run through the batch engine of ``clipkit batch`` (``clipkit/batch.py``): each input
becomes ``OUTPUT/<name>.png`` with the settings and statistics embedded; an output that already holds the same
settings is skipped (resume), one made with other settings is a failure unless ``--overwrite``; inputs are never
written over, writes are atomic, and each run logs JSON lines beside the outputs. ``--reference`` adds PSNR and
SSIM against well-lit references to each output's record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from clipkit.api import Result
from clipkit.batch import IMAGE_EXTS, Job, expand_inputs, method_spec, run_spec
from clipkit.guidance.errors import ClipKitError
from clipkit.guidance.images import pil_to_tensor
from clipkit.guidance.threads import job_threads
from clipkit.methods.enhance.enhance import EnhanceSettings
from clipkit.methods.enhance.enhance import load_image as load_image_tensor
from clipkit.methods.enhance.metrics import psnr, ssim
from clipkit.presets import load_preset, preset_values
from clipkit.registry import get_method


def reference_metrics(image: Image.Image, folder: Path, stem: str) -> dict:
    """PSNR / SSIM of the saved 8-bit result against ``folder/<stem>.*`` when that reference exists (same size)."""
    refs = [p for p in expand_inputs([str(folder)], IMAGE_EXTS) if p.stem == stem]
    if not refs:
        return {}
    out, ref = pil_to_tensor(image), load_image_tensor(refs[0])
    if out.shape != ref.shape:
        return {"reference_error": f"size {tuple(ref.shape[-2:])} differs from the result's {tuple(out.shape[-2:])}"}
    return {"reference": str(refs[0]), "psnr": round(psnr(out, ref), 3), "ssim": round(ssim(out, ref), 4)}


def enhance_preset(name: str) -> dict:
    """The settings of an enhance preset: ``gentle`` names ``enhance-gentle``; a path works too."""
    ref = name if name.startswith("enhance-") or Path(name).suffix else f"enhance-{name}"
    return preset_values(get_method("enhance"), load_preset(ref))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clipkit enhance", description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, action="append", help="folder, file or glob (repeatable)")
    ap.add_argument("--output", required=True, type=Path, help="folder for the PNG results and the run log")
    ap.add_argument("--checkpoint", default=None, help="published name (clip-lit, rave-unpaired, ...) or file")
    ap.add_argument("--preset", default=None, help="gentle, strong, or a checkpoint preset (presets/enhance-*.json)")
    ap.add_argument("--strength", type=float, default=None, help="0 = unchanged, 1 = as trained (default)")
    ap.add_argument("--tile", type=int, default=None, help="tile core size in pixels (default 0: tiles only "
                    "images above ~2 MP)")
    ap.add_argument("--overwrite", action="store_true", help="redo outputs made with other settings")
    ap.add_argument("--reference", type=Path, default=None,
                    help="folder of well-lit references (same file stem): adds PSNR and SSIM to each record")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: the cores this process may use; $OMP_NUM_THREADS also sets it)")
    args = ap.parse_args(argv)
    with job_threads(1, args.threads):  # one photo at a time: each may use every core
        return _enhance_folders(args)


def _enhance_folders(args: argparse.Namespace) -> int:

    scores: list[float] = []
    try:
        preset = enhance_preset(args.preset) if args.preset else {}
        chosen = {"checkpoint": args.checkpoint, "strength": args.strength, "tile": args.tile}
        values = {k: v for k, v in {**preset, **{k: v for k, v in chosen.items() if v is not None}}.items()
                  if k in chosen}
        settings = EnhanceSettings(**values).validate()

        def score(job: Job, result: Result) -> None:
            if args.reference is not None:
                metrics = reference_metrics(result.image, args.reference, job.input.stem)
                result.record["reference"] = metrics
                if "psnr" in metrics:
                    scores.append(metrics["psnr"])

        spec = method_spec(get_method("enhance"), settings, on_result=score)
        status = run_spec(spec, args.input, args.output, overwrite=args.overwrite, progress=not args.quiet)
    except (ClipKitError, ValueError) as e:  # ValueError: a preset of another method
        print(f"error: {e}", file=sys.stderr)
        return 2
    if scores:
        print(f"mean PSNR {sum(scores) / len(scores):.2f} dB over {len(scores)} images with references",
              file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
