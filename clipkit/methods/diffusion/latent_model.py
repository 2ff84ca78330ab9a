"""A latent diffusion model as one folder of diffusers components, resolved from local files only.

Layout (what ``save_latent_model`` writes and ``load_latent_model`` reads)::

    <folder>/vae/         diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)
    <folder>/denoiser/    clipkit.methods.diffusion.denoiser.LatentDenoiser (same two files)
    <folder>/scheduler/   the training noise schedule (DDPMScheduler's scheduler_config.json)

Resolution order (no model hub is ever contacted): an existing folder path -> a model the project ships
(``world/models/<name>/``) -> a Hugging Face repo id already in the local hub cache -> an error naming what to
supply.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from clipkit.guidance.errors import CheckpointError, ModelNameError, WeightsNotFoundError
from clipkit.guidance.limits import check_config, check_network_size, loads_json
from clipkit.guidance.runs import model_loading
from clipkit.guidance.weights import shipped_dirs

DEFAULT_LATENT_MODEL = "world-ldm"
KIND = "latent-diffusion"  # the weights resolver's name for model folders of this kind
COMPONENTS = ("vae", "denoiser", "scheduler")


@dataclass(eq=False)
class LatentModel:
    """VAE + denoiser + the noise schedule they were trained with; frozen, in eval mode."""

    vae: torch.nn.Module
    denoiser: torch.nn.Module
    scheduler_config: dict
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.denoiser.latent_shape

    @property
    def image_size(self) -> int:
        """The VAE's native resolution in pixels."""
        return int(self.vae.config.sample_size)

    def ddim(self):
        """A fresh DDIM scheduler on the training schedule (deterministic steps, no clipping of latents)."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config, clip_sample=False, set_alpha_to_one=True)

    def decode(self, latents: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Images in [0, 1] of `latents`, bilinearly resized to `size` px, square or (height, width) (the VAE's
        own size by default)."""
        image = self.vae.decode(latents).sample.add(1).div(2)
        hw = (size, size) if isinstance(size, int) else size
        if hw is not None and tuple(hw) != tuple(image.shape[-2:]):
            image = F.interpolate(image, size=tuple(hw), mode="bilinear", align_corners=False)
        return image.clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The latents of images in [0, 1] (B, 3, H, W), resized to the VAE's size first: the posterior means, the
        inverse of ``decode`` (the denoiser was trained on unscaled means)."""
        size = self.image_size
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.vae.encode(x * 2 - 1).latent_dist.mean


def packaged_latent_models() -> list[str]:
    """Latent diffusion models that ship with the project."""
    return sorted(p.name for d in shipped_dirs(KIND) if d.is_dir() for p in d.iterdir() if _is_model_dir(p))


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / c).is_dir() for c in COMPONENTS)


def resolve_latent_model(name: str | os.PathLike) -> Path:
    """The local folder holding model `name`, or an error saying what to supply."""
    text = str(name).strip()
    if not text:
        raise ModelNameError(f"name a latent diffusion model; packaged: {', '.join(packaged_latent_models())}")
    path = Path(text).expanduser()
    if path.exists():
        if _is_model_dir(path):
            return path
        raise WeightsNotFoundError(f"{path} is not a latent diffusion model folder: it needs the subfolders "
                                   f"{', '.join(c + '/' for c in COMPONENTS)} (as written by world/train_ldm.py)")
    for d in shipped_dirs(KIND):
        if _is_model_dir(d / text):
            return d / text
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(text, local_files_only=True))
        except Exception:  # not in the local cache: no hub can be reached, so say what to do instead
            cached = None
        if cached is not None and _is_model_dir(cached):
            return cached
        raise WeightsNotFoundError(
            f"latent diffusion model '{text}' is not in the local Hugging Face cache and no model hub can be "
            f"reached. Download it elsewhere and pass the folder's path (with {', '.join(COMPONENTS)} inside).")
    if os.sep in text or path.suffix:
        raise WeightsNotFoundError(f"latent diffusion model folder not found: {path}")
    raise ModelNameError(f"unknown latent diffusion model '{text}'; packaged: "
                         f"{', '.join(packaged_latent_models()) or 'none'} (or pass a folder path)")


CONFIG_FILES = {"vae": "config.json", "denoiser": "config.json", "scheduler": "scheduler_config.json"}
MAX_CONFIG_BYTES = 1 << 20


def check_model_folder(folder: Path) -> None:
    """Before diffusers builds anything for real: each component's config is small JSON with sane values
    (``limits.check_config``); the parameters its weights files declare (read from their headers) are within
    ``$CLIPKIT_MAX_PARAMS``; and the network its config describes (built on the meta device: no memory) has no
    more parameters than those files hold, so a config cannot ask for more memory than its files bring."""
    from diffusers import AutoencoderKL
    from safetensors import safe_open

    from clipkit.methods.diffusion.denoiser import LatentDenoiser

    total = 0
    for part, name in CONFIG_FILES.items():
        path = folder / part / name
        where = f"{folder.name}/{part}/{name}"
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise CheckpointError(f"{where} is over {MAX_CONFIG_BYTES} bytes: not a model config")
            check_config(loads_json(path.read_text(encoding="utf-8"), where), where)
        except FileNotFoundError as e:
            raise CheckpointError(f"{folder}: {part}/{name} is missing") from e
        except (OSError, UnicodeDecodeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{where} is not a readable config: {e}") from e
        held = 0
        for weights in sorted((folder / part).glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                        numel = 1
                        for d in f.get_slice(key).get_shape():
                            numel *= d
                        held += numel
            except Exception as e:  # a damaged header
                raise CheckpointError(f"cannot read the weights header of {weights}: {e}") from e
        total += held
        check_network_size(total, f"latent diffusion model {folder}")
        cls = {"vae": AutoencoderKL, "denoiser": LatentDenoiser}.get(part)
        if cls is not None:
            try:
                with torch.device("meta"):  # thread-local: other threads keep building on the CPU
                    described = sum(p.numel() for p in cls.from_config(cls.load_config(folder / part)).parameters())
            except Exception as e:  # a config diffusers cannot build
                raise CheckpointError(f"{where} does not describe a {cls.__name__}: {type(e).__name__}: {e}") from e
            if described > held:
                raise CheckpointError(f"{where} describes a network of {described:,} parameters, but the weights "
                                      f"in {folder.name}/{part}/ hold {held:,}: the config is damaged or not theirs")


def load_latent_model(name: str | os.PathLike = DEFAULT_LATENT_MODEL, device: str | torch.device | None = None
                      ) -> LatentModel:
    """Load a latent diffusion model folder in fp32, frozen, on `device` (default: accelerate's pick)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    from clipkit.guidance.clip import default_device
    from clipkit.methods.diffusion.denoiser import LatentDenoiser

    folder = resolve_latent_model(name)
    check_model_folder(folder)
    try:
        # low_cpu_mem_usage=False: diffusers' low-memory path builds under accelerate's init_empty_weights, which
        # patches torch.nn.Module process-wide, so a network another thread built meanwhile (the app runs jobs in
        # threads) came out on the meta device. Memory stays bounded: check_model_folder held the config to its files.
        with model_loading():
            vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32, local_files_only=True,
                                                low_cpu_mem_usage=False)
            denoiser = LatentDenoiser.from_pretrained(folder / "denoiser", torch_dtype=torch.float32,
                                                      local_files_only=True, low_cpu_mem_usage=False)
        scheduler_config = dict(DDPMScheduler.load_config(folder / "scheduler"))
    except Exception as e:  # diffusers raises OSError / ValueError / safetensors errors for damaged files
        raise CheckpointError(f"cannot load the latent diffusion model in {folder}: {type(e).__name__}: {e}. "
                              "Re-copy the folder or retrain it (clipkit train world-ldm)") from e
    if vae.config.latent_channels != denoiser.config.latent_channels:
        raise CheckpointError(f"{folder}: the VAE has {vae.config.latent_channels} latent channels but the "
                              f"denoiser expects {denoiser.config.latent_channels}")
    dev = torch.device(device) if device is not None else default_device()
    vae = vae.to(dev).eval().requires_grad_(False)
    denoiser = denoiser.to(dev).eval().requires_grad_(False)
    label = folder.name if folder.parent in shipped_dirs(KIND) else str(folder)
    return LatentModel(vae, denoiser, scheduler_config, label)


_CACHE: dict[str, LatentModel] = {}
_CACHE_LOCK = threading.Lock()


def get_latent_model(name: str | os.PathLike = DEFAULT_LATENT_MODEL) -> LatentModel:
    """``load_latent_model`` once per process and folder, shared by every run and app session."""
    folder = resolve_latent_model(name)
    key = str(folder.resolve())
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_latent_model(folder)  # the folder, not the name: resolved once, not twice
        return _CACHE[key]


def save_latent_model(folder: Path, vae: torch.nn.Module, denoiser: torch.nn.Module, scheduler,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write the three components (weights in `dtype`) to `folder` atomically: a half-written folder never
    replaces a good one."""
    import copy

    from diffusers.utils import logging as diffusers_logging

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its note on casting with .to() is about loading, not saving
    try:
        for part, module in (("vae", vae), ("denoiser", denoiser)):
            copy.deepcopy(module).to("cpu", dtype).save_pretrained(tmp / part, safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    scheduler.save_pretrained(tmp / "scheduler")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
