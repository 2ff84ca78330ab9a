"""CLIP models through open_clip, resolved from local files only, with a differentiable image path.

Resolution order for weights (no model hub is ever contacted):
explicit file -> local caches (open_clip's URL cache, the Hugging Face hub cache) -> weights the project
ships (``world/models/<name>.safetensors``) -> :class:`WeightsNotFoundError` naming the file to supply.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from clipkit.guidance import weights
from clipkit.guidance.errors import CheckpointError, ModelNameError, WeightsNotFoundError
from clipkit.guidance.images import check_images
from clipkit.guidance.runs import model_loading, seeded_init

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"  # the core's own: the tiny test CLIP
TINY_MODEL = "tiny-clip"
DEFAULT_MODEL = "world-guide"
RANDOM = "random"  # pretrained="random": seeded random init, for benchmarks and tests of the plumbing

_CONFIGS_ADDED: list[Path] = []
_CONFIGS_LOCK = threading.Lock()


def _open_clip():
    """open_clip, imported on first use (with timm it costs ~0.6 s the app's first page does not need), with the
    core's model configs and those the weights providers register (``weights.register_configs``) added."""
    import open_clip

    wanted = [CONFIG_DIR, *weights.config_dirs("clip")]
    if wanted != _CONFIGS_ADDED:
        with _CONFIGS_LOCK:
            for d in wanted:
                if d not in _CONFIGS_ADDED:
                    open_clip.add_model_config(d)
                    _CONFIGS_ADDED.append(d)
    return open_clip


def default_device() -> torch.device:
    """The device accelerate would pick for this process (CUDA, MPS or CPU)."""
    from accelerate import PartialState

    return PartialState().device


def packaged_models() -> list[str]:
    """Models whose config and weights ship with an installed package (the world CLIPs)."""
    open_clip = _open_clip()
    return [n for n in weights.shipped_names("clip") if n in open_clip.list_models()]


def available_models() -> list[str]:
    """Every name `load_clip` accepts: packaged world models first, then open_clip's architectures."""
    open_clip = _open_clip()
    packaged = packaged_models()
    return packaged + [n for n in open_clip.list_models() if n not in packaged]


def _cached_file_for_tag(name: str, tag: str) -> tuple[Path | None, str]:
    """Find a published checkpoint in the local caches; also say which file would be needed."""
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise WeightsNotFoundError(
            f"'{tag}' is neither a file nor a known pretrained tag for {name}. "
            f"Known tags: {', '.join(tags) or 'none'}. Pass a local checkpoint path instead."
        )
    candidates: list[Path] = []
    wanted = ""
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        wanted = f"{filename} from the Hugging Face repo {repo}"
        try:
            from huggingface_hub import constants, try_to_load_from_cache

            cache_dir = os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)
            for fn in (filename.rsplit(".", 1)[0] + ".safetensors", filename):
                hit = try_to_load_from_cache(repo, fn, cache_dir=cache_dir)
                if isinstance(hit, str):
                    candidates.append(Path(hit))
        except ImportError:
            pass
    if cfg.get("url"):
        base = os.path.basename(cfg["url"])
        wanted = wanted or f"{base} from {cfg['url']}"
        candidates.append(Path(os.path.expanduser("~/.cache/clip")) / base)
    for c in candidates:
        if c.is_file():
            return c, wanted
    return None, wanted


@dataclass(frozen=True)
class ResolvedWeights:
    """A local weights file plus what the published tag says about using it (activation, normalisation)."""

    path: Path
    tag_cfg: dict = field(default_factory=dict)


def _local_config_names() -> set[str]:
    """Model names with a config in the core's or a provider's config folder: known without importing open_clip."""
    return {p.stem for d in (CONFIG_DIR, *weights.config_dirs("clip")) if d.is_dir() for p in d.glob("*.json")}


def resolve_weights(name: str, pretrained: str | os.PathLike | None) -> ResolvedWeights:
    """Turn (model name, tag or path) into an existing local file, or explain what is missing.

    A name with a local config and no published tag resolves without importing open_clip (the app checks its
    default models' weights while building the first page)."""
    if name not in _local_config_names() and name not in _open_clip().list_models():
        raise ModelNameError(
            f"unknown CLIP model '{name}'. Packaged: {', '.join(packaged_models()) or 'none'}; "
            f"open_clip architectures: {', '.join(_open_clip().list_models())}"
        )
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if path.is_file():
            return ResolvedWeights(path)
        if path.suffix or os.sep in str(pretrained):
            raise WeightsNotFoundError(f"CLIP checkpoint file not found: {path}")
        hit, wanted = _cached_file_for_tag(name, str(pretrained))
        if hit:
            return ResolvedWeights(hit, dict(_open_clip().get_pretrained_cfg(name, str(pretrained))))
        raise WeightsNotFoundError(
            f"weights for {name} ({pretrained}) are not on this machine and no model hub can be reached. "
            f"Download {wanted} elsewhere and pass its path (CLI: --clip-weights PATH; API: pretrained=PATH), "
            f"or place it in ~/.cache/clip or the Hugging Face cache."
        )
    for d in weights.shipped_dirs("clip"):
        path = d / f"{name}.safetensors"
        if path.is_file():
            return ResolvedWeights(path)
    raise WeightsNotFoundError(
        f"no weights given for {name} and the project ships none for it. Pass pretrained=<tag or local file> "
        f"(e.g. a checkpoint downloaded elsewhere); packaged models: {', '.join(packaged_models()) or 'none'}"
    )


@dataclass(eq=False)
class ClipModel:
    """An open_clip model plus what guidance needs around it: differentiable preprocessing and a text cache."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    cache_size: int = 4096
    _text_cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else int(
            self.encode_text([""]).shape[-1]
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the model's input size and normalise, keeping the graph (no PIL round trip)."""
        check_images(images)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
            )
        return (images - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, D) for images in [0, 1]; gradients flow to `images`."""
        feats = self.model.encode_image(self.preprocess(images.to(self.device)))
        return F.normalize(feats.float(), dim=-1)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts)).to(self.device)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D); cached per prompt, and uncached prompts go in one batch."""
        with self._lock:
            return self._encode_text(list(prompts))

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        self.cache_hits += len(prompts) - sum(p in missing for p in prompts)
        self.cache_misses += len(missing)
        if missing:
            with torch.inference_mode():
                feats = F.normalize(self.model.encode_text(self.tokenize(missing)).float(), dim=-1)
            for p, f in zip(missing, feats):
                self._text_cache[p] = f.clone()
        out = []
        for p in prompts:
            self._text_cache.move_to_end(p)
            out.append(self._text_cache[p])
        while len(self._text_cache) > self.cache_size:
            self._text_cache.popitem(last=False)
        return torch.stack(out) if out else torch.empty(0, device=self.device)

    def caption_probabilities(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Zero-shot: each image's softmax over `captions` (B, N) at the model's learned temperature; no grad."""
        with torch.inference_mode():
            logits = self.model.logit_scale.exp().float() * self.encode_image(images) @ self.encode_text(captions).T
            return logits.softmax(-1)

    def encode_text_grad(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings with gradients (for prompt learning); no cache."""
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _wrap(model: torch.nn.Module, name: str, device: torch.device, tag_cfg: dict | None = None) -> ClipModel:
    open_clip = _open_clip()
    model = model.to(device).eval().requires_grad_(False)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pp = {**(getattr(model.visual, "preprocess_cfg", {}) or {}), **(tag_cfg or {})}
    mean = torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(1, 3, 1, 1)
    return ClipModel(model, open_clip.get_tokenizer(name), name, size, mean, std)


def load_clip(
    name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> ClipModel:
    """Load a CLIP by open_clip name and pretrained tag or local file, frozen, ready for guidance."""
    open_clip = _open_clip()
    device = torch.device(device) if device is not None else default_device()
    if pretrained == RANDOM:
        if name not in open_clip.list_models():
            resolve_weights(name, None)  # raises the unknown-name error
        return _random_model(name, 0, device)
    resolved = resolve_weights(name, pretrained)
    path = resolved.path
    try:
        # A file found for a published tag is loaded as a file, so carry over what the tag implies
        # (e.g. OpenAI's QuickGELU); otherwise the network would silently compute something else.
        quick_gelu = bool(resolved.tag_cfg.get("quick_gelu", False))
        with model_loading():  # its random init must not interleave with another thread's seeded build
            model = open_clip.create_model(name, pretrained=str(path), device="cpu", force_quick_gelu=quick_gelu)
    except (RuntimeError, ValueError, OSError, KeyError, EOFError) as e:
        raise CheckpointError(f"could not load CLIP checkpoint {path} for {name}: {e}") from e
    except Exception as e:  # safetensors and zip readers raise their own types on corrupt files
        raise CheckpointError(f"could not load CLIP checkpoint {path} for {name}: {type(e).__name__}: {e}") from e
    return _wrap(model, name, device, resolved.tag_cfg)


@contextmanager
def _quiet_open_clip():
    """open_clip warns that a model has random weights; for the test model that is the point."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_LOADED: dict[tuple, ClipModel] = {}
_LOAD_LOCK = threading.Lock()


def get_clip(name: str = DEFAULT_MODEL, pretrained: str | os.PathLike | None = None, device=None) -> ClipModel:
    """`load_clip`, but each (name, weights, device) is loaded once per process and then shared."""
    key = (name, str(pretrained) if pretrained else None, str(device) if device else None)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_clip(name, pretrained, device)
        return _LOADED[key]


def tiny_clip(seed: int = 0, device: str | torch.device = "cpu") -> ClipModel:
    """A small randomly initialised CLIP for tests: same code path as real models, no weights needed."""
    return _random_model(TINY_MODEL, seed, torch.device(device))


def _random_model(name: str, seed: int, device: torch.device) -> ClipModel:
    open_clip = _open_clip()
    with seeded_init(seed), _quiet_open_clip():
        model = open_clip.create_model(name, pretrained=None, device="cpu")
    return _wrap(model, name, device)
