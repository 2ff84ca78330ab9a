"""Backlit enhancement: the CLIP-LIT / RAVE illumination network, its published weights, and CLIP-guided training.

    from generators.enhance import enhance
    image, record = enhance("photo.jpg", checkpoint="clip-lit")      # or "rave-unpaired", a file, preset="gentle"

Modules: ``network`` (the net), ``checkpoints`` (published names, loading, safetensors, convert CLI), ``tiling``,
``api`` (``enhance``, ``enhance_pair``), ``cli`` (folders), ``clip_lit`` and ``rave`` (guidance methods), ``content``,
``data``, ``synthetic``, ``train`` (training CLI), ``metrics``.
"""

import importlib

_EXPORTS = {"enhance": "api", "enhance_image_tensor": "api", "enhance_pair": "api", "PUBLISHED": "checkpoints",
            "load_network": "checkpoints"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Lazy exports, so ``python -m generators.enhance.<module>`` does not import that module twice."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
