"""clipkit: the web app (no subcommand, or `serve`) and the command line (`generate`, `batch`).

Thin wiring over guidance/ and generators/: the app is ui/app.py, batch runs are generators/batch.py, and both
go through the same Python API (generators/api.py) and presets (generators/presets.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from guidance.errors import ClipKitError


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="CLIP model name (default: the packaged world guide)")
    p.add_argument("--clip-weights", dest="pretrained", default=None,
                   help="pretrained tag or local checkpoint file for --model")


def cmd_generate(args: argparse.Namespace) -> int:
    """Text to image by ``args.method`` (generate or diffusion). Flags override the preset (``--preset``, e.g. a
    name or an earlier output PNG), which overrides defaults."""
    from generators import api

    known = set(api.get_method(args.method).field_names())
    overrides = {k: v for k, v in vars(args).items() if k in known and v is not None}
    result = api.run(args.method, args.preset, progress=True, **overrides)
    from guidance.images import numbered_outputs

    paths = numbered_outputs(args.out, len(result.images))
    out = ", ".join(str(result.save(path, index=i)) for i, path in enumerate(paths))
    last = result.history[-1] if result.history else {}
    timings = result.record["timings"]
    print(f"wrote {out}  loss={last.get('loss', float('nan')):.4f}  "
          f"{timings['optimise_s']:.1f}s ({timings['s_per_step'] * 1000:.0f} ms/step)")
    return 0


def _test_models(args: argparse.Namespace) -> bool:
    from generators.api import test_models_enabled

    return bool(args.tiny) or test_models_enabled()


def cmd_serve(args: argparse.Namespace) -> int:
    from ui.app import serve

    serve(host=args.host, port=args.port, test_models=_test_models(args), output_dir=args.output_dir,
          concurrency=args.concurrency, inbrowser=args.open)
    return 0


def _parse_set(items: list[str]) -> dict:
    """--set key=value pairs; values are JSON when they parse (numbers, true, null), else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_batch(args: argparse.Namespace) -> int:
    from generators.batch import run_batch

    return run_batch(args.preset, args.input, args.output, _parse_set(args.set), dry_run=args.dry_run,
                     overwrite=args.overwrite, clip="tiny" if _test_models(args) else None,
                     progress=not args.no_progress, masks=args.masks, method_name=args.method)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    g = sub.add_parser("generate", help="text to image, optimised against a CLIP guide")
    g.add_argument("--preset", default=None, help="start from a preset (name, .json, or a clipkit .png)")
    g.add_argument("--prompt", default=None, help="e.g. 'a red circle:1 | blurry:-0.5'")
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--size", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--cutouts", type=int, default=None)
    g.add_argument("--tv-weight", dest="tv_weight", type=float, default=None)
    g.add_argument("--templates", choices=["plain", "imagenet"], default=None)
    g.add_argument("--out", type=Path, default=Path("outputs/generate.png"))
    _add_clip_args(g)
    g.set_defaults(func=cmd_generate, method="generate")

    d = sub.add_parser("diffusion", help="text to image, sampled from a latent diffusion model guided by a CLIP")
    d.add_argument("--preset", default=None, help="start from a preset (name, .json, or a clipkit .png)")
    d.add_argument("--prompt", default=None, help="e.g. 'a red circle:1 | blurry:-0.5'")
    d.add_argument("--steps", type=int, default=None, help="DDIM steps")
    d.add_argument("--guidance-scale", dest="guidance_scale", type=float, default=None)
    d.add_argument("--recurrence", type=int, default=None, help="guided passes per step")
    d.add_argument("--batch", type=int, default=None, help="images sampled together (out-1.png, out-2.png ...)")
    d.add_argument("--size", type=int, default=None)
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--diffusion-model", dest="diffusion_model", default=None,
                   help="packaged latent diffusion model or a model folder (default world-ldm)")
    d.add_argument("--out", type=Path, default=Path("outputs/diffusion.png"))
    _add_clip_args(d)
    d.set_defaults(func=cmd_generate, method="diffusion")

    s = sub.add_parser("serve", help="serve the web app (the default with no subcommand)")
    _add_serve_args(s)
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser("batch", help="run a preset over folders / globs of inputs (resumable, logged)")
    b.add_argument("--preset", required=True, help="preset name, .json file, or a clipkit .png to reproduce")
    b.add_argument("--input", required=True, action="append",
                   help="folder, file or glob (repeatable); images, or .txt prompts for generate")
    b.add_argument("--output", required=True, type=Path, help="folder for <input name>.png and the run log")
    b.add_argument("--method", default=None, help="another method than the preset's, e.g. poda for a style preset")
    b.add_argument("--masks", default=None, help="edit: folder of <input name>.png masks (white = change)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    b.add_argument("--dry-run", action="store_true", help="list what would run or be skipped; write nothing")
    b.add_argument("--overwrite", action="store_true", help="redo outputs made with other settings")
    b.add_argument("--tiny", action="store_true", help="use the tiny random test CLIP (no weights needed)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)
    return parser


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("CLIPKIT_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CLIPKIT_PORT", "7860")))
    p.add_argument("--tiny", action="store_true",
                   help="tests/demos: CLIP-guided methods use the tiny random test CLIP (also CLIPKIT_TEST_MODELS=1)")
    p.add_argument("--output-dir", type=Path, default=None, help="where results are written (outputs/app)")
    p.add_argument("--concurrency", type=int, default=1, help="runs at once across all users (memory bound)")
    p.add_argument("--open", action="store_true", help="open a browser tab")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _add_serve_args(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        args.func = cmd_serve
    try:
        return args.func(args)
    except ClipKitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
