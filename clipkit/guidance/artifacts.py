"""Typed results beside images: latents, directions, trained networks, statistics.

A method may hand the next one more than pixels: an inverted StyleGAN latent, a trained mapper or style network,
PODA's feature statistics. An ``Artifact`` is a named set of tensors with a ``kind`` ("latent/wplus",
"network/clipstyler-unet", "statistics/pin" ...) and JSON metadata (what made it, what it applies to). It saves as
safetensors (tensors only: nothing in the file can run code) and reloads bit for bit; a run's record names each
artifact with its kind and content hash, so a result PNG points at the exact files saved beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from clipkit.guidance.errors import CheckpointError

FORMAT = "clipkit-artifact/1"
MAX_META_BYTES = 1 << 20  # metadata is JSON text; a bigger header is not one of ours


@dataclass
class Artifact:
    """Tensors of one kind plus JSON metadata; ``kind`` is "family/what" (e.g. "latent/wplus")."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "/" not in self.kind:
            raise ValueError(f"artifact kind must read 'family/what', got {self.kind!r}")

    def sha256(self) -> str:
        """A hash of kind, tensor names, dtypes, shapes and bytes: equal artifacts have equal hashes."""
        h = hashlib.sha256(self.kind.encode())
        for name in sorted(self.tensors):
            t = self.tensors[name].detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def pick(self, index: int, batch: int) -> Artifact:
        """The part of a batch's latents that belongs to image ``index`` of ``batch`` (tensors and metadata lists
        with one entry per image are cut; shared ones kept), so a picked picture carries only its own latent.
        Other kinds (directions, networks) belong to the whole batch and come back as they are."""
        if batch <= 1 or not self.kind.startswith("latent/"):
            return self
        if not 0 <= index < batch:
            raise IndexError(f"image {index} of a batch of {batch}")
        tensors = {k: (v[index:index + 1] if v.ndim and v.shape[0] == batch else v) for k, v in self.tensors.items()}
        meta = {k: (v[index:index + 1] if isinstance(v, list) and len(v) == batch else v)
                for k, v in self.meta.items()}
        return Artifact(self.kind, tensors, {**meta, "picked": [index, batch]})

    def describe(self) -> dict[str, Any]:
        """What a run's record says of it (JSON)."""
        return {"kind": self.kind, "sha256": self.sha256(),
                "tensors": {k: list(v.shape) for k, v in sorted(self.tensors.items())}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as safetensors with the kind and metadata in its header."""
        from clipkit.guidance.runs import save_safetensors

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        return save_safetensors(tensors, path, {"format": FORMAT, "kind": self.kind,
                                                "meta": json.dumps(self.meta, default=str, sort_keys=True)})

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str | None = None) -> Artifact:
        """Read an artifact file; ``kind`` (exact, or a family prefix such as "latent/") must match when given."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"artifact file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                md = f.metadata() or {}
                if md.get("format") != FORMAT:
                    raise CheckpointError(f"{path} is not a clipkit artifact (no '{FORMAT}' header)")
                if len(md.get("meta", "")) > MAX_META_BYTES:
                    raise CheckpointError(f"{path}: artifact metadata over {MAX_META_BYTES} bytes")
                # copies: safetensors' buffers are not 64-byte aligned, which changes some kernels' rounding
                tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
        found = md.get("kind", "")
        if kind is not None and not kind_fits(found, kind):
            raise CheckpointError(f"{path} holds a '{found}' artifact, expected '{kind}'")
        try:
            meta = json.loads(md.get("meta", "{}"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: artifact metadata is not JSON: {e}") from e
        return cls(found, tensors, meta)


def kind_fits(found: str, wanted: str) -> bool:
    """Whether an artifact of kind ``found`` serves where ``wanted`` is asked ("latent/" takes any latent)."""
    return found == wanted or (wanted.endswith("/") and found.startswith(wanted))


def as_artifact(value: Artifact | str | os.PathLike, kind: str | None = None) -> Artifact:
    """An artifact given as one, or as the path of its file."""
    if isinstance(value, Artifact):
        if kind is not None and not kind_fits(value.kind, kind):
            raise CheckpointError(f"a '{value.kind}' artifact was given where '{kind}' is needed")
        return value
    return Artifact.load(value, kind)
