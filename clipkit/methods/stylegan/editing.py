"""What the StyleGAN editing methods share: where an edit starts, exact rendering, the papers' CLIP loss, the
identity hook, StyleSpace layer bookkeeping, resumable synthesis and the generator's file identity.

* **Start latents**: a "latent/wplus" artifact (from ``stylegan`` or ``invert``: its W+ and, when it carries them,
  its noise maps) or seeds ``seed .. seed + count - 1`` at a truncation, mapped image by image exactly as
  ``stylegan`` samples them, so an edit at strength 0 redraws the sampled picture bit for bit.
* **Rendering** goes image by image (a batch changes the convolutions' summation order; see ``sample.py``).
* **CLIP loss**: StyleCLIP, StyleMC and NADA's layer picker score an image by ``1 - cos(E_I(image), E_T(text))`` on
  the whole image resized to the CLIP's input (``CosinePromptTerm``); cutouts are an option, not the papers'.
* **Identity**: the papers' face-identity network (ArcFace IR-SE50) is a separate download that does not exist on
  these machines. A user-supplied module (images in [0, 1] -> embeddings, ``identity_net=``) gives the papers'
  ``1 - cos`` identity loss; without one the guide CLIP's early feature maps (``ClipEarlyFeatures``, the content
  loss the style methods use) stand in, as a content-preservation term.
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.guidance.artifacts import Artifact, as_artifact
from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.features import ClipEarlyFeatures, content_loss
from clipkit.guidance.files import file_sha256
from clipkit.guidance.guide import PromptTerm, Term
from clipkit.methods.stylegan.models import resolve_generator, to_unit
from clipkit.methods.stylegan.network import Generator
from clipkit.methods.stylegan.sample import latents_for_seeds

LATENT_KIND = "latent/wplus"
STYLES_KIND = "latent/styles"
DIRECTION_KIND = "direction/stylespace"
CACHE_ENV = "CLIPKIT_CACHE_DIR"


# ------------------------------------------------------------------------------------------------ start latents
@dataclass
class Start:
    """The latents an edit starts from, with the noise each image was drawn with."""

    wplus: Tensor  # [B, n_latent, D]
    mode: str = "const"  # "const", "none", "given" (shared maps), "per-image" (maps for each image)
    maps: list[Tensor] | None = None  # mode "given": num_layers maps [1 or B, 1, r, r]
    per_image: list[list[Tensor]] = field(default_factory=list)  # mode "per-image"
    meta: dict[str, Any] = field(default_factory=dict)  # what the record says of the start

    @property
    def count(self) -> int:
        return self.wplus.shape[0]

    def noise(self, g: Generator, index: int | slice | None = None) -> list[Tensor | None]:
        """The noise inputs for image ``index`` (an int), a slice of the images, or all of them (None)."""
        if self.mode == "per-image":
            idx = range(self.count)[index] if isinstance(index, slice) else (
                range(self.count) if index is None else [index])
            return [torch.cat([self.per_image[i][k] for i in idx]) for k in range(g.num_layers)]
        if self.mode == "given":
            maps = self.maps or []
            if maps and maps[0].shape[0] > 1 and index is not None:  # maps for each image of the batch
                return [m[index:index + 1] if isinstance(index, int) else m[index] for m in maps]
            return list(maps)
        return g.make_noise(1, self.mode)

    def artifact_tensors(self, wplus: Tensor) -> dict[str, Tensor]:
        """An edited W+ with the start's noise maps (when it had its own), so the artifact redraws the edit."""
        tensors = {"wplus": wplus.detach().cpu().clone()}
        if self.mode == "given" and self.maps:
            tensors.update({f"noise_{i}": m.detach().cpu().clone() for i, m in enumerate(self.maps)})
        return tensors

    def artifact_meta(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.meta.items() if k in ("seeds", "truncation")}
        meta["noise_mode"] = "given" if self.mode == "given" else (
            "random" if self.mode == "per-image" else self.mode)
        return meta


def start_latents(g: Generator, latent: Artifact | str | os.PathLike | None, seed: int, count: int,
                  truncation: float) -> Start:
    """Where an edit starts: the given "latent/wplus" artifact, else ``count`` seeds from ``seed`` at
    ``truncation``, each mapped alone (the W+ ``stylegan`` returns for the same seeds)."""
    if latent is not None:
        art = as_artifact(latent, LATENT_KIND)
        wplus = art.tensors.get("wplus")
        want = (g.n_latent, g.style_dim)
        if wplus is None or wplus.ndim != 3 or tuple(wplus.shape[1:]) != want:
            got = None if wplus is None else tuple(wplus.shape)
            raise ParameterError(f"the latent artifact holds W+ of shape {got}, but this generator needs "
                                 f"[B, {want[0]}, {want[1]}]: was it made with another generator "
                                 f"({art.meta.get('generator', 'unknown')})?")
        # own copies: tensors read from a file may sit at addresses whose alignment changes the rounding of
        # matrix products (measured: one ulp), and a start must redraw the same whatever it was read from
        wplus = wplus.to(g.device, torch.float32).clone()
        meta = {"latent": "artifact", "latent_sha256": art.sha256(), "latent_generator": art.meta.get("generator")}
        maps = [art.tensors.get(f"noise_{i}") for i in range(g.num_layers)]
        if all(m is not None for m in maps):
            return Start(wplus, "given", [m.to(g.device, torch.float32).clone() for m in maps], meta=meta)
        mode = str(art.meta.get("noise_mode", "const"))
        seeds = art.meta.get("seeds")
        if mode == "random" and isinstance(seeds, list) and len(seeds) == wplus.shape[0]:
            per = [g.make_noise(1, "random", torch.Generator().manual_seed(int(s))) for s in seeds]
            return Start(wplus, "per-image", per_image=per, meta={**meta, "seeds": seeds})
        if mode not in ("const", "none"):
            mode = "const"
        return Start(wplus, mode, meta=meta)
    seeds = [seed + i for i in range(count)]
    z = latents_for_seeds(g.style_dim, seeds).to(g.device)
    with torch.no_grad():
        w = torch.cat([g.truncate(g.mapping(z[i:i + 1]), truncation) for i in range(count)])
        wplus = g.w_to_wplus(w)
    return Start(wplus.clone(), "const", meta={"latent": "seeds", "seeds": seeds, "truncation": truncation})


# ------------------------------------------------------------------------------------------------ rendering
@torch.no_grad()
def render(g: Generator, start: Start, wplus: Tensor | None = None,
           styles: Sequence[Tensor] | None = None) -> Tensor:
    """Images in [0, 1] for the start's images, from W+ (default: the start's own) or S, one image at a time
    with each image's noise: the same summation order as sampling, so strength 0 redraws the start exactly."""
    out = []
    for i in range(start.count):
        if styles is not None:
            img = g.synthesis(styles=[s[i:i + 1] for s in styles], noise=start.noise(g, i))
        else:
            w = start.wplus if wplus is None else wplus
            img = g.synthesis(w[i:i + 1], noise=start.noise(g, i))
        out.append(to_unit(img))
    return torch.cat(out)


@torch.no_grad()
def styles_of(g: Generator, wplus: Tensor) -> list[Tensor]:
    """S for each image computed alone (what ``synthesis(wplus)`` computes inside), stacked per layer."""
    per = [g.styles(wplus[i:i + 1]) for i in range(wplus.shape[0])]
    return [torch.cat([p[k] for p in per]) for k in range(len(per[0]))]


_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def fast_copy(g: Generator) -> Generator:
    """A frozen copy of ``g`` with the unfused modulated convs (one shared-weight conv per batch): 1.5-2.5x faster
    forward and backward on CPU for the optimisation loops; equal to ``g`` up to float rounding (~1e-6). Final
    images are drawn with ``g`` itself, so they match sampling exactly. One copy per generator, shared."""
    with _FAST_LOCK:
        fast = _FAST.get(g)
        if fast is None:
            fast = copy.deepcopy(g).set_fused_modconv(False).eval().requires_grad_(False)
            _FAST[g] = fast
        return fast


# ------------------------------------------------------------------------------------------------ the StyleSpace
def is_torgb(name: str) -> bool:
    return name.startswith("to_rgb")


def layer_resolution(name: str) -> int:
    """The resolution a StyleSpace layer works at: ``conv1``/``to_rgb1`` 4 px, ``convs.2j``, ``convs.2j+1`` and
    ``to_rgbs.j`` 2^(j+3) px (the upsampling conv belongs to the block it produces)."""
    if name in ("conv1", "to_rgb1"):
        return 4
    j = int(name.split(".")[1])
    return 2 ** ((j // 2) + 3) if name.startswith("convs.") else 2 ** (j + 3)


def conv_layers(g: Generator, min_resolution: int = 0, max_resolution: int | None = None) -> list[int]:
    """Indices into S of the modulated 3x3 convs (ToRGB excluded) whose resolution lies in the given range."""
    top = max_resolution if max_resolution is not None else g.size
    return [i for i, (name, _) in enumerate(g.style_layers)
            if not is_torgb(name) and min_resolution <= layer_resolution(name) <= top]


def wplus_index(name: str) -> int:
    """The W+ code an S layer reads: conv1 0, to_rgb1 1, convs.i i + 1, to_rgbs.j 2j + 3."""
    if name == "conv1":
        return 0
    if name == "to_rgb1":
        return 1
    j = int(name.split(".")[1])
    return j + 1 if name.startswith("convs.") else 2 * j + 3


def style_convs(g: Generator) -> list[torch.nn.Module]:
    """The modulated conv of each S layer, in S order (its ``modulation`` maps w to the layer's style)."""
    return [m.conv for kind, m, _ in _ops(g)]


def _ops(g: Generator) -> list[tuple[str, torch.nn.Module, int | None]]:
    """The synthesis as a list of steps in S order: ("conv", module, noise index) or ("rgb", module, None)."""
    ops: list[tuple[str, torch.nn.Module, int | None]] = [("conv", g.conv1, 0), ("rgb", g.to_rgb1, None)]
    for j, to_rgb in enumerate(g.to_rgbs):
        ops += [("conv", g.convs[2 * j], 2 * j + 1), ("conv", g.convs[2 * j + 1], 2 * j + 2), ("rgb", to_rgb, None)]
    return ops


def synthesis_state(g: Generator, styles: Sequence[Tensor], noise: Sequence[Tensor | None], stop: int,
                    ) -> tuple[Tensor, Tensor | None]:
    """The synthesis run up to (not including) S layer ``stop``: (features, RGB skip) to resume from."""
    out = g.input(styles[0].shape[0])
    skip = None
    for i, (kind, module, n) in enumerate(_ops(g)[:stop]):
        if kind == "conv":
            out = module(out, styles[i], noise=noise[n])
        else:
            skip = module(out, styles[i], skip)
    return out, skip


def synthesis_from(g: Generator, styles: Sequence[Tensor], noise: Sequence[Tensor | None], start: int,
                   state: tuple[Tensor, Tensor | None]) -> Tensor:
    """Resume the synthesis at S layer ``start`` from ``synthesis_state``: the same calls in the same order as
    ``Generator.synthesis``, so a perturbation of layer ``start`` need not recompute the layers before it."""
    out, skip = state
    for i, (kind, module, n) in enumerate(_ops(g)):
        if i < start:
            continue
        if kind == "conv":
            out = module(out, styles[i], noise=noise[n])
        else:
            skip = module(out, styles[i], skip)
    return skip


def direction_artifact(direction: Sequence[Tensor], g: Generator, generator: str, meta: dict[str, Any]) -> Artifact:
    """An S-space direction (one tensor per layer, zeros where it does not act) as an artifact."""
    tensors = {f"s_{i}": d.detach().reshape(-1).cpu().clone() for i, d in enumerate(direction)}
    info = {"generator": generator, "generator_sha256": generator_sha256(generator),
            "layers": [n for n, _ in g.style_layers], **meta}
    return Artifact(DIRECTION_KIND, tensors, info)


def direction_from_artifact(artifact: Artifact | str | os.PathLike, g: Generator) -> list[Tensor]:
    """The per-layer tensors of an S direction, checked against the generator's StyleSpace."""
    art = as_artifact(artifact, DIRECTION_KIND)
    out = []
    for i, (name, channels) in enumerate(g.style_layers):
        t = art.tensors.get(f"s_{i}")
        if t is None or t.numel() != channels:
            raise ParameterError(f"the direction does not fit this generator's StyleSpace (layer {i} '{name}' has "
                                 f"{channels} channels; the artifact was made for {art.meta.get('generator')})")
        out.append(t.to(g.device, torch.float32).reshape(1, channels).clone())
    if len(art.tensors) != len(out):
        raise ParameterError(f"the direction has {len(art.tensors)} layers, this generator {len(out)}")
    return out


def styles_artifact(styles: Sequence[Tensor], start: Start, generator: str, meta: dict[str, Any]) -> Artifact:
    """Edited S codes (and the start's noise maps) as an artifact."""
    tensors = {f"s_{i}": s.detach().cpu().clone() for i, s in enumerate(styles)}
    if start.mode == "given" and start.maps:
        tensors.update({f"noise_{i}": m.detach().cpu().clone() for i, m in enumerate(start.maps)})
    return Artifact(STYLES_KIND, tensors, {"generator": generator, **start.artifact_meta(), **meta})


# ------------------------------------------------------------------------------------------------ losses
def cosine_loss(emb: Tensor, text: Tensor, weights: Tensor | None = None) -> Tensor:
    """StyleCLIP's CLIP loss, ``1 - cos``, of unit embeddings (..., D) against prompts (N, D), mean over the
    images and views, weighted sum over prompts."""
    d = (1 - emb @ text.T).reshape(-1, text.shape[0]).mean(0)
    w = torch.ones_like(d) if weights is None else weights.to(d)
    return (d * w).sum()


@dataclass(eq=False)
class CosinePromptTerm(PromptTerm):
    """The papers' CLIP loss (``1 - cos``) toward weighted prompts, over the term's view (None: whole image)."""

    name: str = "clip"

    def __call__(self, emb, src_emb, images, ctx):
        return cosine_loss(emb, self.text_emb, self.text_w)


class Identity:
    """Identity (content) preservation between an edit and its original.

    With ``net`` (a face-identity network: images in [0, 1] (B, 3, H, W) -> embeddings (B, D)) the loss is the
    papers' ``1 - cos`` of the two embeddings, per image, averaged. Without one, the CLIP's early feature maps
    stand in (``content_loss``, relative mean squared difference), since no ArcFace weights exist here.
    """

    def __init__(self, clip: ClipModel | None, net: Callable[[Tensor], Tensor] | None = None) -> None:
        if net is None and clip is None:
            raise ParameterError("the identity term needs a CLIP (its early features) or an identity network")
        self.net = net
        self.early = ClipEarlyFeatures(clip) if net is None else None
        self.name = "custom" if net is not None else "clip-early-features"

    def reference(self, images: Tensor) -> Any:
        """What the original looks like to the identity network (no gradients)."""
        with torch.no_grad():
            if self.net is not None:
                return F.normalize(self.net(images).float().flatten(1), dim=-1).detach()
            return [f.detach() for f in self.early(images)]

    def loss(self, images: Tensor, reference: Any) -> Tensor:
        if self.net is not None:
            emb = F.normalize(self.net(images).float().flatten(1), dim=-1)
            return (1 - (emb * reference.to(emb)).sum(-1)).mean()
        return content_loss(self.early(images), reference)


@dataclass(eq=False)
class IdentityTerm(Term):
    """The identity loss against ``identity_ref=`` (from ``Identity.reference``) given in the guide call."""

    identity: Identity | None = None
    name: str = "identity"
    uses_clip = False

    def __call__(self, emb, src_emb, images, ctx):
        if "identity_ref" not in ctx:
            raise ParameterError("term 'identity' needs identity_ref=... in the guide call")
        return self.identity.loss(images, ctx["identity_ref"])


# ------------------------------------------------------------------------------------------------ files
_HASHES: dict[tuple[str, float, int], str] = {}
_HASH_LOCK = threading.Lock()


def generator_sha256(name: str | os.PathLike) -> str:
    """The sha256 of the file a generator name resolves to (computed once per file version)."""
    path = resolve_generator(name)
    st = os.stat(path)
    key = (str(path), st.st_mtime, st.st_size)
    with _HASH_LOCK:
        if key not in _HASHES:
            _HASHES[key] = file_sha256(path)
        return _HASHES[key]


def cache_dir(*parts: str) -> Path:
    """The user cache folder for derived data (``$CLIPKIT_CACHE_DIR``, else ``~/.cache/clipkit``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "clipkit")
    return Path(root, *parts)


def check_range(s: Any, name: str, low: float, high: float, low_open: bool = False) -> None:
    """``low <= s.name <= high`` (``low < ...`` with ``low_open``), else a ParameterError naming the field."""
    v = getattr(s, name)
    ok = (low < v if low_open else low <= v) and v <= high
    if not ok:
        raise ParameterError(f"{name}={v} must be in {'(' if low_open else '['}{low}, {high}]")
