"""The world test bed's models, registered with the one weights resolver: the world CLIP configs (open_clip's
``add_model_config``, as for any published architecture), the shipped CLIPs and the latent diffusion model."""

from __future__ import annotations

from pathlib import Path

import torch

WORLD_DIR = Path(__file__).resolve().parent
CONFIG_DIR = WORLD_DIR / "model_configs"
MODELS_DIR = WORLD_DIR / "models"


def register_configs() -> None:
    """Make the world configs loadable by name through open_clip (idempotent)."""
    import open_clip

    if "world-guide" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def register() -> None:
    """The ``clipkit.weights`` entry point: world configs and shipped models by kind."""
    from clipkit.guidance.weights import register_configs as register_config_dir
    from clipkit.guidance.weights import register_shipped

    register_config_dir("clip", CONFIG_DIR)  # added to open_clip when guidance.clip first imports it
    register_shipped("clip", MODELS_DIR, "world-*")  # those with an open_clip config (clip.packaged_models)
    register_shipped("latent-diffusion", MODELS_DIR, "world-ldm*")
    register_shipped("stylegan", MODELS_DIR, "world-stylegan*")


def create(name: str, pretrained: str | None = None) -> tuple[torch.nn.Module, object, object]:
    """(model, preprocess, tokenizer) for a world model, loaded the open_clip way."""
    import open_clip

    register_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    return model, preprocess, open_clip.get_tokenizer(name)
