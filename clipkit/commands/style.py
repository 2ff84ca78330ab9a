"""Style transfer from the shell, one image or a folder at a time.

    clipkit style clipstyler --input PHOTOS --output OUT --prompt "oil painting of flowers"
    clipkit style clipstyler --input PHOTOS --output OUT --network OUT/nets/boat.safetensors
    clipkit train stylizer --content PHOTOS --out runs/style/stylizer.safetensors
    clipkit style stylize --input PHOTOS --output OUT --checkpoint runs/style/stylizer.safetensors \
        --prompt "a watercolor painting"
    clipkit style poda --input PHOTOS --output OUT --prompt "driving at night"

Folder runs go through the batch engine of ``clipkit batch`` (``clipkit/batch.py``): a progress bar, outputs
already made with the same settings skipped (resume), a run log, inputs never written over, atomic writes; a file
that fails is reported and the rest go on (exit status 1). ``--preset van-gogh`` reads
presets/style-van-gogh.json; flags override it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from clipkit.api import Result, result_of
from clipkit.batch import IMAGE_EXTS, BatchSpec, Job, expand_inputs, method_spec, run_spec
from clipkit.guidance.clip import get_clip
from clipkit.guidance.errors import ClipKitError
from clipkit.guidance.images import load_image
from clipkit.guidance.runs import CancelToken
from clipkit.guidance.threads import job_threads
from clipkit.methods.style.clipstyler import ClipStylerSettings, apply_network
from clipkit.methods.style.feedforward import (
    DEFAULT_PROMPTS,
    StylizeSettings,
    TrainStylizerSettings,
    get_stylizer,
    train_stylizer,
)
from clipkit.methods.style.network import read_metadata, save_network
from clipkit.methods.style.poda import PinAugmenter, PodaSettings
from clipkit.presets import load_preset, preset_values
from clipkit.registry import get_method


def style_preset(name: str, method: str) -> dict[str, Any]:
    """The settings a style preset gives ``method``: ``van-gogh`` names ``style-van-gogh``; a path works too."""
    ref = name if Path(name).suffix or name.startswith("style-") else f"style-{name}"
    return preset_values(get_method(method), load_preset(ref))


def _settings(cls: type, args: argparse.Namespace, method: str) -> Any:
    """Preset values, then every flag the user gave (flags default to None so the preset shows through)."""
    values: dict[str, Any] = style_preset(args.preset, method) if getattr(args, "preset", None) else {}
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values).validate()


def _common(p: argparse.ArgumentParser, io: bool = True, clip: bool = True) -> None:
    if io:
        p.add_argument("--input", required=True, type=Path, help="an image or a folder of images (not recursive)")
        p.add_argument("--output", required=True, type=Path, help="folder for the PNG results (not the input folder)")
        p.add_argument("--overwrite", action="store_true", help="redo outputs made with other settings")
        p.add_argument("--preset", help="style preset name (presets/style-NAME.json) or path")
        p.add_argument("--prompt")
        p.add_argument("--size", type=int, help="long side in pixels the image is processed at")
    p.add_argument("--seed", type=int)
    if clip:  # the stylizer's CLIP is fixed by its checkpoint
        p.add_argument("--model", help="CLIP name (default: the packaged world-guide)")
        p.add_argument("--pretrained", help="CLIP weights: a local file, a cached tag, or 'random' (plumbing only)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the cores this process may use; $OMP_NUM_THREADS also sets it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clipkit style", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("clipstyler", help="per-prompt network optimised on each image (or a saved one applied)")
    _common(c)
    c.add_argument("--source", help="source text of the direction (default 'a photo')")
    c.add_argument("--steps", type=int)
    c.add_argument("--lr", type=float)
    c.add_argument("--crop-size", dest="crop_size", type=int)
    c.add_argument("--num-crops", dest="num_crops", type=int)
    c.add_argument("--threshold", type=float)
    for name in ("lambda_patch", "lambda_dir", "lambda_c", "lambda_tv"):
        c.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float)
    c.add_argument("--content-net", dest="content_net", choices=("auto", "vgg19", "clip"),
                   help="content features: VGG19 (paper) when its weights are here ('auto'), or CLIP's early layers")
    c.add_argument("--content-weights", dest="content_weights", help="VGG19 checkpoint file (torchvision format)")
    c.add_argument("--save-networks", type=Path, help="folder to save each trained network as NAME.safetensors")
    c.add_argument("--network", type=Path, help="fast mode: apply this saved network instead of optimising")

    s = sub.add_parser("stylize", help="feed-forward text-conditioned stylizer: one pass per image")
    _common(s, clip=False)
    s.add_argument("--checkpoint", help="trained stylizer (.safetensors from train-stylizer; default: the shipped "
                   "world stylizer, which knows world prompts)")
    s.add_argument("--no-noise", dest="noise", action="store_false", default=None)

    p = sub.add_parser("poda", help="prompt-driven instance normalisation of CLIP features, with a visual preview")
    _common(p)
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--preview-steps", dest="preview_steps", type=int)
    p.add_argument("--save-stats", type=Path, help="write the learnt PIN statistics (safetensors) for augmentation")

    t = sub.add_parser("train-stylizer", help="train the feed-forward stylizer over photos and style prompts")
    _common(t, io=False)
    t.add_argument("--content", required=True, type=Path, help="folder of content photos")
    t.add_argument("--out", required=True, type=Path, help="network file (.safetensors); state goes beside it")
    t.add_argument("--prompts", help="style prompts separated by '|' (default: a built-in list of 12)")
    t.add_argument("--prompts-file", type=Path, help="one style prompt per line")
    t.add_argument("--steps", type=int)
    t.add_argument("--size", type=int, help="training crop size")
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--crop-size", dest="crop_size", type=int)
    t.add_argument("--num-crops", dest="num_crops", type=int)
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    t.add_argument("--no-resume", dest="resume", action="store_false", help="start again instead of resuming")
    return ap


def _run_folder(args: argparse.Namespace, spec: BatchSpec, cancel: CancelToken | None = None) -> int:
    return run_spec(spec, [str(args.input)], args.output, overwrite=args.overwrite, progress=not args.quiet,
                    cancel=cancel)


def cmd_clipstyler(args: argparse.Namespace) -> int:
    if args.network is not None:
        return _run_folder(args, _fast_spec(args.network, args.size))
    s = _settings(ClipStylerSettings, args, "clipstyler")
    token = CancelToken()

    def save_net(job: Job, result: Result) -> None:
        if args.save_networks is not None:
            save_network(result.run.extras["network"], args.save_networks / f"{job.input.stem}.safetensors",
                         "clipstyler-unet", result.settings)

    spec = method_spec(get_method("clipstyler"), s, clip=get_clip(s.model, s.pretrained), cancel=token,
                       on_result=save_net)
    return _run_folder(args, spec, token)


def _fast_spec(network: Path, size: int | None) -> BatchSpec:
    """CLIPstyler's fast mode as a batch: a saved network applied to each input (no optimisation)."""
    md = read_metadata(network)["meta"]
    path = str(network.resolve())

    def run_one(image: Path) -> Result:
        return result_of(apply_network(path, load_image(image), size=size))

    want = {"method": "clipstyler", "mode": "fast", "size": size, "network_path": path}
    return BatchSpec("clipstyler", want, run_one, ignore=("prompt", "content_features"), clip_name=md.get("clip"))


def cmd_stylize(args: argparse.Namespace) -> int:
    s = _settings(StylizeSettings, args, "stylize")
    _, meta = get_stylizer(s.checkpoint)  # cached: the runs reuse it
    token = CancelToken()
    spec = method_spec(get_method("stylize"), s, cancel=token)
    # a checkpoint trained further is another network: its outputs are redone, not resumed
    spec = replace(spec, want={**spec.want, "trained_steps": meta.get("step")},
                   ignore=tuple(k for k in spec.ignore if k != "trained_steps"))
    return _run_folder(args, spec, token)


def cmd_poda(args: argparse.Namespace) -> int:
    s = _settings(PodaSettings, args, "poda")
    clip = get_clip(s.model, s.pretrained)
    bank = PinAugmenter(clip)
    token = CancelToken()

    def keep(job: Job, result: Result) -> None:
        pin = result.run.extras["pin"]
        old = bank.banks.get(s.prompt)
        bank.banks[s.prompt] = (pin.mu, pin.sigma) if old is None else (
            torch.cat([old[0], pin.mu]), torch.cat([old[1], pin.sigma]))

    status = _run_folder(args, method_spec(get_method("poda"), s, clip=clip, cancel=token, on_result=keep), token)
    if args.save_stats is not None and bank.banks:
        args.save_stats.parent.mkdir(parents=True, exist_ok=True)
        bank.save(str(args.save_stats))
    return status


def cmd_train(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    if args.prompts_file is not None:
        values["prompts"] = [ln.strip() for ln in args.prompts_file.read_text().splitlines() if ln.strip()]
    elif args.prompts:
        values["prompts"] = [p.strip() for p in args.prompts.split("|") if p.strip()]
    else:
        values["prompts"] = list(DEFAULT_PROMPTS)
    for f in fields(TrainStylizerSettings):
        v = getattr(args, f.name, None)
        if v is not None and f.name != "prompts":
            values[f.name] = v
    s = TrainStylizerSettings(**values).validate()
    clip = get_clip(s.model, s.pretrained)
    result = train_stylizer(expand_inputs([str(args.content)], IMAGE_EXTS), args.out, s, clip=clip, resume=args.resume,
                            progress=not args.quiet)
    h = result.history
    start = result.extras["start_step"]
    if not h:
        print(f"{args.out} is already trained to step {start} (raise --steps to continue)", file=sys.stderr)
        return 0
    first, last = h[0]["loss"], sum(x["loss"] for x in h[-10:]) / len(h[-10:])
    print(f"trained steps {start}..{start + len(h)} in {result.timings['train_s']:.1f}s "
          f"({result.timings['s_per_step']:.2f}s/step); loss {first:.1f} -> {last:.1f} (mean of last 10); "
          f"saved {args.out}", file=sys.stderr)
    return 0


COMMANDS = {"clipstyler": cmd_clipstyler, "stylize": cmd_stylize, "poda": cmd_poda, "train-stylizer": cmd_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with job_threads(1, args.threads):  # one image (or training step) at a time: each may use every core
            return COMMANDS[args.command](args)
    except ClipKitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
