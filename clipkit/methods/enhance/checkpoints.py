"""Load the published CLIP-LIT / RAVE checkpoints and the project's own safetensors; convert between them.

Published files are torch zip pickles of a plain state dict saved from ``DataParallel`` (keys ``module.*``); they
are read with ``weights_only=True`` so no code in them can run. The project's own files are safetensors with the
network's settings in the metadata.

CLI: ``clipkit enhance-weights convert SRC DST.safetensors`` or
``clipkit enhance-weights convert-all OUTDIR`` (every published checkpoint), ``list``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from torch import Tensor

from clipkit.guidance.errors import CheckpointError, WeightsNotFoundError
from clipkit.guidance.files import file_sha256
from clipkit.guidance.runs import model_loading, save_safetensors

from .network import EnhanceNet

__all__ = ["CheckpointError", "MissingCheckpointError", "PUBLISHED", "load_network", "save_network", "convert"]



class MissingCheckpointError(WeightsNotFoundError, CheckpointError):
    """The checkpoint file is not there: a WeightsNotFoundError that ``except CheckpointError`` also catches."""


REPO_ROOT = Path(__file__).resolve().parents[3]
WEIGHTS_ENV = "CLIPKIT_WEIGHTS_DIR"

# Short name -> file under the weights folder (see ../shared/weights/PROVENANCE.md for their origin).
PUBLISHED: dict[str, str] = {
    "clip-lit": "clip-lit/enhancement_model.pth",
    "clip-lit-init": "clip-lit/init_enhancement_model.pth",
    "rave-paired": "rave/rave_paired.pth",
    "rave-unpaired": "rave/rave_unpaired.pth",
    "rave-unpaired-shifted": "rave/rave_unpaired_shifted.pth",
    "clip-lit-paired": "rave/clip_lit_paired.pth",
    "clip-lit-unpaired": "rave/clip_lit_unpaired.pth",
    "clip-lit-latent-paired": "rave/clip_lit_latent_paired.pth",
    "clip-lit-latent-unpaired": "rave/clip_lit_latent_unpaired.pth",
}




def weights_dir() -> Path:
    """Folder of published weights: ``$CLIPKIT_WEIGHTS_DIR`` or ``../shared/weights`` beside the repository."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "weights"


def resolve(checkpoint: str | os.PathLike) -> Path:
    """Turn a short name (``clip-lit``, ``rave-unpaired`` ...) or a path into an existing file, or explain why not."""
    name = str(checkpoint)
    if name in PUBLISHED:
        path = weights_dir() / PUBLISHED[name]
        if not path.is_file():
            raise MissingCheckpointError(
                f"published checkpoint {name!r} not found at {path}. Put the authors' file there (see "
                f"shared/weights/PROVENANCE.md), point ${WEIGHTS_ENV} at a folder holding {PUBLISHED[name]}, "
                "or pass a file path."
            )
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(PUBLISHED)
        raise MissingCheckpointError(f"checkpoint file {path} does not exist; pass an existing .pth/.safetensors file "
                              f"or one of the published names: {known}")
    return path


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """Drop the DataParallel prefix wherever present (keys without it pass through)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """State dict (prefix stripped) and metadata of a .pth/.pt (weights_only) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint file {path} does not exist")
    meta: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # a hostile file raises anything: IndexError, KeyError, TypeError ...
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {e}); the file is corrupt, not a checkpoint, or "
            "holds pickled objects other than tensors (refused: pickles are read with weights_only=True). "
            "Re-download it (published files: compare with the sha256 in shared/weights/PROVENANCE.md)."
        ) from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a plain state dict of tensors")
    return strip_prefix(state), meta


PADDING_MODES = ("reflect", "zeros", "replicate", "circular")


def network_config(state: Mapping[str, Tensor], padding_mode: str = "reflect") -> dict[str, object]:
    """The network's config as a file describes it (illumination channels from ``cond_add1.weight``'s shape,
    padding from its metadata), checked before anything is built: the shape of an empty tensor costs no bytes in a
    file, so a few bytes could otherwise ask for millions of channels."""
    if "cond_add1.weight" not in state:
        raise CheckpointError("state dict has no 'cond_add1.weight': not a CLIP-LIT/RAVE enhancement network")
    shape = tuple(state["cond_add1.weight"].shape)
    if len(shape) != 4 or shape[1:] != (32, 3, 3) or shape[0] not in (1, 3):
        raise CheckpointError(f"'cond_add1.weight' has shape {shape}; a CLIP-LIT/RAVE network's is (1 or 3, 32, 3, 3)")
    if padding_mode not in PADDING_MODES:
        raise CheckpointError(f"padding_mode {padding_mode!r} must be one of {', '.join(PADDING_MODES)}")
    return {"out_channels": shape[0], "padding_mode": padding_mode}


def build_network(state: Mapping[str, Tensor], padding_mode: str = "reflect") -> EnhanceNet:
    """A network shaped for ``state`` (1- or 3-channel illumination) with the weights loaded strictly."""
    config = network_config(state, padding_mode)
    with model_loading():  # its throwaway random init must not interleave with another thread's seeded build
        net = EnhanceNet(**config)
    net.load_state_dict(state, strict=True)
    return net


def load_network(
    checkpoint: str | os.PathLike = "clip-lit", device: str | torch.device = "cpu", padding_mode: str | None = None
) -> EnhanceNet:
    """The enhancement network from a published name or a file, in eval mode with gradients off."""
    path = resolve(checkpoint)
    state, meta = read_state_dict(path)
    try:
        net = build_network(state, padding_mode or meta.get("padding_mode", "reflect"))
    except (RuntimeError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path} does not fit the enhancement network: {e}") from e
    net.source = str(path)  # type: ignore[attr-defined]
    return net.eval().requires_grad_(False).to(device)


def save_network(net: EnhanceNet, path: str | os.PathLike, metadata: Mapping[str, object] | None = None) -> Path:
    """Save as safetensors (atomically) with the settings needed to rebuild the network."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "clipkit.enhance.v1", "out_channels": str(net.out_channels), "padding_mode": net.padding_mode}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return save_safetensors(state, path, meta)


sha256 = file_sha256  # records exactly which weights produced a result


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Published .pth (or name) -> safetensors, recording where it came from."""
    path = resolve(src)
    net = load_network(path)
    return save_network(net, dst, {"source": path.name, "source_sha256": sha256(path)})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="clipkit enhance-weights", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert one checkpoint (name or file) to safetensors")
    c.add_argument("src")
    c.add_argument("dst")
    a = sub.add_parser("convert-all", help="convert every published checkpoint into OUTDIR/<name>.safetensors")
    a.add_argument("outdir")
    sub.add_parser("list", help="list published names and whether their files are present")
    args = p.parse_args(argv)
    if args.cmd == "convert":
        print(convert(args.src, args.dst))
    elif args.cmd == "convert-all":
        for name in PUBLISHED:
            print(convert(name, Path(args.outdir) / f"{name}.safetensors"))
    else:
        for name, rel in PUBLISHED.items():
            path = weights_dir() / rel
            print(f"{name:26s} {'ok     ' if path.is_file() else 'missing'} {path}")


if __name__ == "__main__":
    main()
