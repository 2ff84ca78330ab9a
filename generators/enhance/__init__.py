"""Backlit enhancement: the CLIP-LIT / RAVE illumination network, its published weights, and CLIP-guided training.

    from generators.enhance import enhance
    image, record = enhance("photo.jpg", checkpoint="clip-lit")      # or "rave-unpaired", a file, preset="gentle"

Modules: ``network`` (the net), ``checkpoints`` (published names, loading, safetensors, convert CLI), ``tiling``,
``api`` (``enhance``, ``enhance_pair``), ``cli`` (folders), ``clip_lit`` and ``rave`` (guidance methods), ``content``,
``data``, ``synthetic``, ``train`` (training CLI), ``metrics``.
"""

from generators.enhance.api import enhance, enhance_image_tensor, enhance_pair
from generators.enhance.checkpoints import PUBLISHED, load_network

__all__ = ["PUBLISHED", "enhance", "enhance_image_tensor", "enhance_pair", "load_network"]
