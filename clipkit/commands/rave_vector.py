"""`clipkit rave-vector`: RAVE's residual vector r from two folders of photos, the words nearest to it, saved."""

from __future__ import annotations

import argparse
import json

from clipkit.guidance.runs import save_safetensors
from clipkit.methods.enhance.data import UnpairedData
from clipkit.methods.enhance.rave import ResidualGuidance, nearest_prompts
from clipkit.methods.enhance.train import load_guide_clip


def main(argv: list[str] | None = None) -> int:
    """``clipkit rave-vector --backlit DIR --welllit DIR [--clip NAME --clip-weights PATH]``:
    compute r from two folders, print the words nearest to it (both ends) and optionally save it."""
    ap = argparse.ArgumentParser(prog="clipkit rave-vector", description=main.__doc__.split(":")[0])
    ap.add_argument("--backlit", required=True)
    ap.add_argument("--welllit", required=True)
    ap.add_argument("--clip", default="world-guide")
    ap.add_argument("--clip-weights", default=None)
    ap.add_argument("--size", type=int, default=224, help="centre crop side the images are encoded at")
    ap.add_argument("--words", default=None, help="text file of candidate prompts, one a line (default: vocabulary)")
    ap.add_argument("-k", type=int, default=15)
    ap.add_argument("--save", default=None, help="write r, its threshold and the two means to this .safetensors")
    args = ap.parse_args(argv)
    clip = load_guide_clip(args.clip, args.clip_weights)
    data = UnpairedData.from_folders(args.backlit, args.welllit, args.size)
    rg = ResidualGuidance.from_images(clip, data.backlit.all(), data.welllit.all())
    words = [w.strip() for w in open(args.words, encoding="utf-8") if w.strip()] if args.words else None
    print(json.dumps({"threshold": rg.threshold, **nearest_prompts(clip, rg.vector, words, args.k)}, indent=1))
    if args.save:
        save_safetensors({k: v.contiguous() for k, v in rg.tensors().items()}, args.save, {"clip": args.clip})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
