"""clipkit: command line (and, with no subcommand, the web app). Thin wiring over guidance/ and generators/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guidance.errors import ClipKitError


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="CLIP model name (default: the packaged world guide)")
    p.add_argument("--clip-weights", dest="pretrained", default=None,
                   help="pretrained tag or local checkpoint file for --model")


def cmd_generate(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from generators.image.generate import GenerateSettings, generate
    from guidance.images import save_image

    known = {f.name for f in fields(GenerateSettings)}
    overrides = {k: v for k, v in vars(args).items() if k in known and v is not None}
    result = generate(**overrides)
    out = save_image(result.images, args.out, result.record())
    last = result.history[-1] if result.history else {}
    print(f"wrote {out}  loss={last.get('loss', float('nan')):.4f}  "
          f"{result.timings['optimise_s']:.1f}s ({result.timings['s_per_step'] * 1000:.0f} ms/step)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    g = sub.add_parser("generate", help="text to image, optimised against a CLIP guide")
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
    g.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
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
