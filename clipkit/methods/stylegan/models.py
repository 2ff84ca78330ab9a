"""Finding and sharing loaded generators: a name or file resolved through the weights resolver, loaded once."""

from __future__ import annotations

import os
import threading

import torch

from clipkit.guidance.clip import default_device
from clipkit.guidance.weights import resolve
from clipkit.methods.stylegan.checkpoints import load_stylegan
from clipkit.methods.stylegan.network import Generator

DEFAULT_GENERATOR = "world-stylegan2"
KIND = "stylegan"
_HINT = ("convert a published checkpoint with `clipkit convert stylegan SRC DST.safetensors`, or pass its .pt "
         "(rosinality) / .pkl (NVIDIA) file")
_CACHE: dict[tuple[str, float, str], Generator] = {}
_LOCK = threading.Lock()


def resolve_generator(name: str | os.PathLike) -> str:
    """The file a generator name or path stands for (shipped ``world-stylegan2``, or a .safetensors/.pt/.pkl)."""
    return str(resolve(KIND, name, suffixes=(".safetensors", ".pt", ".pkl"), hint=_HINT))


def get_generator(name: str | os.PathLike = DEFAULT_GENERATOR, device: str | torch.device | None = None) -> Generator:
    """The generator for ``name``, loaded once per process and file version, frozen, on ``device``."""
    path = resolve_generator(name)
    dev = str(device or default_device())
    key = (path, os.path.getmtime(path), dev)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_stylegan(path, dev).eval().requires_grad_(False)
        return _CACHE[key]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator output (about [-1, 1]) -> images in [0, 1]."""
    return ((images + 1) / 2).clamp(0, 1)
