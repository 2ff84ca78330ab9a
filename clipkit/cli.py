"""clipkit's command line: the web app (no subcommand, or `serve`), `run METHOD` for every method (flags built from
its Settings dataclass), `batch` over folders, `train` and `convert`, and the family folder tools (`style`,
`enhance`). All of it goes through the same Python API (clipkit.api) and presets (clipkit.presets) as the app.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from clipkit.guidance.errors import ClipKitError
from clipkit.guidance.threads import job_threads

if typing.TYPE_CHECKING:
    from clipkit.registry import Method


def cmd_run(args: argparse.Namespace) -> int:
    """One method with flags over a preset (``--preset``: a name or an earlier output PNG) over defaults."""
    with job_threads(1, args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from clipkit import api
    from clipkit.guidance.files import check_not_protected
    from clipkit.guidance.images import check_output_path, load_image, load_mask, numbered_outputs

    m = api.get_method(args.method)
    check_output_path(args.out)  # before any work: a wrong suffix or an unwritable folder fails now
    overrides = {k: v for k, v in vars(args).items() if k in set(m.field_names()) and v is not None}
    sources = {i.name: getattr(args, i.name) for i in m.image_inputs}
    if getattr(args, "mask", None) is not None:
        sources["mask"] = args.mask
    # outputs never replace what the run reads: its images, its mask, the preset (a PNG whose settings it reuses)
    protect = (*sources.values(), *([args.preset] if args.preset and Path(args.preset).is_file() else []))
    _, settings = api.build_settings(m.name, args.preset, **overrides)
    check_not_protected(numbered_outputs(args.out, int(getattr(settings, "batch", 1) or 1)), protect,
                        "an input of this run")
    images = {k: (load_mask(v) if k == "mask" else load_image(v)) for k, v in sources.items()}
    images.update({a.name: getattr(args, a.name) for a in m.artifact_inputs
                   if a.upload and getattr(args, a.name) is not None})
    clip = "tiny" if _test_models(args) else None
    result = api.run(m.name, settings, clip=clip, progress=not args.quiet, **images)
    paths = numbered_outputs(args.out, len(result.images))
    out = ", ".join(str(result.save(path, index=i, protect=protect)) for i, path in enumerate(paths))
    last = result.history[-1] if result.history else {}
    seconds = sum(v for k, v in result.record["timings"].items() if k.endswith("_s"))
    losses = "  ".join(f"{k}={v:.4f}" for k, v in last.items() if v == v)  # NaN (no loss) is left out
    print(f"wrote {out}  {losses}  {seconds:.1f}s".rstrip())
    return 0


def _test_models(args: argparse.Namespace) -> bool:
    from clipkit.api import test_models_enabled

    return bool(getattr(args, "tiny", False)) or test_models_enabled()


def cmd_serve(args: argparse.Namespace) -> int:
    """The app, behind a start page that answers at once (``clipkit.ui.starting``): gradio and torch are imported
    only once the page is up, so this module and the serve arguments must not import them."""
    from clipkit.ui.starting import StartPage

    with StartPage(args.host, args.port, open_browser=args.open) as page:
        page.step("loading the web toolkit (gradio)")
        import gradio  # noqa: F401  (its own stage: the longest one)

        page.step("loading torch and the methods")
        from clipkit.ui.app import serve

        serve(host=args.host, port=args.port, test_models=_test_models(args), output_dir=args.output_dir,
              concurrency=args.concurrency, weights_dirs=args.weights_dir, threads=args.threads, start_page=page)
    return 0


def _parse_set(items: list[str]) -> dict[str, str]:
    """--set key=value pairs, as texts: ``presets.text_overrides`` reads each by its field's declared type."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = value
    return out


def cmd_batch(args: argparse.Namespace) -> int:
    from clipkit.batch import run_batch
    from clipkit.presets import load_preset, text_overrides

    method = args.method or load_preset(args.preset).method
    overrides = text_overrides(method, _parse_set(args.set))
    with job_threads(1, args.threads):  # one input at a time: each run may use every core
        return run_batch(args.preset, args.input, args.output, overrides, dry_run=args.dry_run,
                         overwrite=args.overwrite, clip="tiny" if _test_models(args) else None,
                         progress=not args.no_progress, masks=args.masks, method_name=args.method)


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """(argparse type, is_bool) for a Settings field's type: Optional[X] -> X; lists and tuples parse as JSON."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = arms[0] if len(arms) == 1 else str
    if hint is bool:
        return None, True
    if hint in (int, float, str):
        return hint, False
    return json.loads, False


THREADS_HELP = ("torch CPU threads (default: the cores this process may use, divided among the runs at once; "
                "$OMP_NUM_THREADS also sets it)")
ALIASES = {"pretrained": ("--clip-weights",)}  # the name users know for a CLIP's weights file


def add_method_parser(sub: Any, m: Method) -> argparse.ArgumentParser:
    """``clipkit run NAME``: a flag per Settings field (type, default and the app's label as help), one per image
    input, ``--preset`` and ``--out``; flags default to None so a preset's values show through."""
    p = sub.add_parser(m.name, help=m.description.split(". ")[0], description=m.description)
    p.add_argument("--preset", default=None, help="start from a preset (name, .json, or a clipkit .png)")
    for inp in m.image_inputs:
        p.add_argument(f"--{inp.name}", required=True, type=Path, help=inp.label)
        if inp.mask:
            p.add_argument("--mask", type=Path, default=None, help="white = change, black = keep exactly")
    for art in (a for a in m.artifact_inputs if a.upload):  # a result's artifact file (<result>.<name>.safetensors)
        p.add_argument(f"--{art.name.replace('_', '-')}", dest=art.name, required=art.required, type=Path,
                       default=None, help=f"{art.label}: a '{art.kind}' artifact file")
    hints = typing.get_type_hints(m.settings_cls)
    for f in fields(m.settings_cls):
        kind, is_bool = _flag_type(hints[f.name])
        c = m.controls.get(f.name)
        words = [w for w in ((c.label if c else None), (c.info if c else None)) if w]
        default = m.defaults().__dict__[f.name]
        helptext = "; ".join(words + [f"default {default!r}"]).replace("%", "%%")
        flags = ["--" + f.name.replace("_", "-"), *ALIASES.get(f.name, ())]
        if is_bool:
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            p.add_argument(*flags, dest=f.name, type=kind, default=None, help=helptext)
    p.add_argument("--out", type=Path, default=Path(f"outputs/{m.name}.png"), help="PNG (settings embedded)")
    p.add_argument("--tiny", action="store_true", help="use the tiny random test CLIP (no weights needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=cmd_run)
    return p


# Commands with parsers of their own: `clipkit VERB [NAME] ARGS...` hands [*PREFIX, *ARGS] to MODULE.main.
TRAINERS = {  # clipkit train NAME ...: every trainer checkpoints and resumes exactly
    "stylizer": ("clipkit.commands.style", ("train-stylizer",), "the feed-forward text-conditioned stylizer"),
    "enhance": ("clipkit.methods.enhance.train", (), "a CLIP-LIT / RAVE backlit-enhancement network"),
    "world-clip": ("clipkit.world.train_clip", (), "a world CLIP (guide or judge)"),
    "world-ldm": ("clipkit.world.train_ldm", (), "the world latent diffusion model"),
    "world-stylegan": ("clipkit.world.train_stylegan", (), "the world StyleGAN2"),
}
CONVERTERS = {  # clipkit convert NAME SRC DST: published formats -> safetensors
    "enhance": ("clipkit.methods.enhance.checkpoints", ("convert",), "a CLIP-LIT / RAVE .pth checkpoint"),
    "stylegan": ("clipkit.commands.convert_stylegan", (), "a StyleGAN2 generator (.pt port / NVIDIA .pkl)"),
}
TOOLS = {  # clipkit NAME ...
    "style": ("clipkit.commands.style", (), "folders through CLIPstyler / the stylizer / PODA"),
    "enhance": ("clipkit.commands.enhance", (), "folders of back-lit photos (with PSNR/SSIM references)"),
    "rave-vector": ("clipkit.commands.rave_vector", (), "RAVE's residual vector from two folders of photos"),
    "enhance-weights": ("clipkit.methods.enhance.checkpoints", (), "list / convert the published enhancement weights"),
    "eval-world-clip": ("clipkit.world.eval_clip", (), "held-out accuracy of a world CLIP"),
}
VERBS = {"train": TRAINERS, "convert": CONVERTERS}


def _delegate(argv: list[str]) -> int | None:
    """Run a trainer, converter or tool named by ``argv``; None when ``argv`` names none of them."""
    if argv[0] in VERBS:
        table = VERBS[argv[0]]
        if len(argv) < 2 or argv[1] not in table:
            listing = "; ".join(f"{k}: {v[2]}" for k, v in table.items())
            raise ClipKitError(f"clipkit {argv[0]} NAME ...: NAME is one of {', '.join(table)} ({listing})")
        module, prefix, _ = table[argv[1]]
        rest = argv[2:]
    elif argv[0] in TOOLS:
        module, prefix, _ = TOOLS[argv[0]]
        rest = argv[1:]
    else:
        return None
    return int(importlib.import_module(module).main([*prefix, *rest]) or 0)


def build_parser() -> argparse.ArgumentParser:
    epilog = ("train NAME: " + ", ".join(TRAINERS) + "; convert NAME SRC DST: " + ", ".join(CONVERTERS) + "; "
              + "; ".join(f"{k}: {v[2]}" for k, v in TOOLS.items()))
    parser = argparse.ArgumentParser(prog="clipkit", description=__doc__, epilog=epilog)
    sub = parser.add_subparsers(dest="command")

    r = sub.add_parser("run", help="run one method: clipkit run METHOD --help lists its settings")
    per_method = r.add_subparsers(dest="method", required=True, metavar="METHOD")
    from clipkit.registry import methods

    for m in methods().values():
        add_method_parser(per_method, m)

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
    b.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    b.set_defaults(func=cmd_batch)
    return parser


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("CLIPKIT_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CLIPKIT_PORT", "7860")))
    p.add_argument("--tiny", action="store_true",
                   help="tests/demos: CLIP-guided methods use the tiny random test CLIP (also CLIPKIT_TEST_MODELS=1)")
    p.add_argument("--output-dir", type=Path, default=None, help="where results are written (outputs/app)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="runs at once across all users (memory bound); each gets cores // N torch threads")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of each run (default: the cores "
                   "this process may use // --concurrency; $OMP_NUM_THREADS also sets it)")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.add_argument("--weights-dir", action="append", default=[], type=Path,
                   help="a folder whose weights files clients may name (repeatable; also $CLIPKIT_WEIGHTS_DIR); "
                        "the app accepts no other server path")


def _serve_argv(argv: list[str]) -> list[str] | None:
    """The serve arguments when ``argv`` starts the app (no subcommand, or `serve`), else None; help goes to the
    full parser, which lists every subcommand."""
    if "-h" in argv or "--help" in argv:
        return None
    if not argv or argv[0].startswith("-"):
        return argv
    return argv[1:] if argv[0] == "serve" else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and (argv[0] in VERBS or argv[0] in TOOLS):
        try:
            return _delegate(argv) or 0
        except ClipKitError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    serve_argv = _serve_argv(argv)
    if serve_argv is not None:  # the app: parsed without the method registry, which imports torch
        parser = argparse.ArgumentParser(prog="clipkit serve", description="serve the web app")
        _add_serve_args(parser)
        args = parser.parse_args(serve_argv)
        args.func = cmd_serve
    else:
        parser = build_parser()
        _add_serve_args(parser)
        args = parser.parse_args(argv)
        if args.command is None:
            args.func = cmd_serve
    try:
        return args.func(args)
    except (ClipKitError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
