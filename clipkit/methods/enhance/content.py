"""The identity/content term of CLIP-LIT and RAVE: keep the enhanced image's CLIP features close to the input's.

The papers compare intermediate feature maps of a CLIP RN101 for the enhanced and the input image (weights
1, 1, 1, 1, 0.5 over its stages). Here the features come from the guide CLIP's own image tower
(``guidance.features.ClipEarlyFeatures``: ResNet stages or ViT blocks at native resolution), so the term
works with any CLIP the project loads, including the tiny and world models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clipkit.guidance.clip import ClipModel
from clipkit.guidance.features import ClipEarlyFeatures, content_loss
from clipkit.guidance.guide import Term


@dataclass(eq=False)
class ContentTerm(Term):
    """Guide term (no CLIP embedding needed): relative feature MSE between the images and ``ctx['content_of']``.

    ``content_of`` is the un-enhanced input batch; its features are computed without gradients.
    """

    depth: int = 4
    name: str = "content"
    uses_clip = False
    features: ClipEarlyFeatures | None = field(default=None, repr=False)

    def setup(self, clip: ClipModel) -> None:
        self.features = ClipEarlyFeatures(clip, depth=self.depth)

    def __call__(self, emb, src_emb, images: torch.Tensor, ctx) -> torch.Tensor:
        with torch.no_grad():
            reference = self.features(ctx["content_of"])
        return content_loss(self.features(images), reference)
