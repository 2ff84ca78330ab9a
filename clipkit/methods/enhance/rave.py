"""RAVE (Gaintseva et al., 2024): CLIP guidance for backlit enhancement without prompts in token space.

(a) ``clip_lit.LatentPromptPair``: the (negative, positive) prompt pair learned directly as two vectors of CLIP's
    joint embedding space (no text encoder in the loop); it trains with CLIP-LIT's functions.
(b) Residual vector: r = normalise(mean well-lit embedding (normalised) - mean backlit embedding (normalised)),
    computed once from the two unpaired folders, no prompt tuning at all. The enhancement network is trained with
    (cos(E(I_hat), r) - t)^2 (``guidance.losses.residual_vector_loss``), where t = cos(mean well-lit, r) is the value
    well-lit images have, plus the content term. ``nearest_prompts`` shows which words r points to, as the paper does
    to reveal biases of the training data; ``shifted`` removes the direction of those words (RAVE's "shifted" model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.guidance import losses
from clipkit.guidance.clip import ClipModel
from clipkit.guidance.guide import ResidualVectorTerm


@torch.no_grad()
def image_embeddings(clip: ClipModel, images: Tensor, batch: int = 64) -> Tensor:
    """Unit CLIP embeddings (N, D) of images (N, 3, H, W) in [0, 1], encoded in batches."""
    return torch.cat([clip.encode_image(images[i : i + batch]) for i in range(0, len(images), batch)])


@dataclass
class ResidualGuidance:
    """The residual vector r and the threshold t that well-lit images reach: everything RAVE's loss needs."""

    vector: Tensor  # (D,), unit
    threshold: float
    positive_mean: Tensor  # normalised mean well-lit embedding
    negative_mean: Tensor  # normalised mean backlit embedding

    @classmethod
    def from_embeddings(cls, backlit_emb: Tensor, welllit_emb: Tensor) -> ResidualGuidance:
        pos = F.normalize(welllit_emb.float().mean(0), dim=-1)
        neg = F.normalize(backlit_emb.float().mean(0), dim=-1)
        r = losses.residual_vector(neg[None], pos[None])
        return cls(r, float(pos @ r), pos, neg)

    @classmethod
    def from_images(cls, clip: ClipModel, backlit: Tensor, welllit: Tensor) -> ResidualGuidance:
        return cls.from_embeddings(image_embeddings(clip, backlit), image_embeddings(clip, welllit))

    def term(self, weight: float = 1.0) -> ResidualVectorTerm:
        """The guidance term for ``guidance.Guide``."""
        return ResidualVectorTerm(weight=weight, vector=self.vector, threshold=self.threshold)

    def score(self, image_emb: Tensor) -> Tensor:
        """cos(E(I), r) per image: how far along the backlit -> well-lit direction an image sits."""
        return image_emb @ self.vector.to(image_emb)

    def tensors(self) -> dict[str, Tensor]:
        return {"vector": self.vector, "threshold": torch.tensor(self.threshold),
                "positive_mean": self.positive_mean, "negative_mean": self.negative_mean}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> ResidualGuidance:
        return cls(t["vector"], float(t["threshold"]), t["positive_mean"], t["negative_mean"])


def vocabulary(clip: ClipModel) -> list[str]:
    """Every single BPE token of the CLIP tokenizer as text (what RAVE scores against r), special tokens excluded."""
    tok = clip.tokenizer
    words = {tok.decode([i]).strip() for i in range(len(tok.decoder))}
    return sorted(w for w in words if w and not w.startswith("<"))


@torch.no_grad()
def text_embeddings(clip: ClipModel, texts: Sequence[str], batch: int = 1024) -> Tensor:
    return torch.cat([clip.encode_text(list(texts[i : i + batch])) for i in range(0, len(texts), batch)])


def nearest_prompts(
    clip: ClipModel, vector: Tensor, candidates: Sequence[str] | None = None, k: int = 15
) -> dict[str, list[tuple[str, float]]]:
    """The k texts whose CLIP embedding is most aligned with r ("toward") and most opposed ("away").

    ``candidates`` defaults to the tokenizer's whole vocabulary (slow for a real CLIP on CPU: ~49k encodings).
    """
    texts = list(candidates) if candidates is not None else vocabulary(clip)
    cos = text_embeddings(clip, texts) @ F.normalize(vector.float(), dim=-1).to(clip.device)
    order = cos.argsort(descending=True).tolist()
    pick = lambda idx: [(texts[i], round(float(cos[i]), 4)) for i in idx]  # noqa: E731
    return {"toward": pick(order[:k]), "away": pick(order[::-1][:k])}


def shifted(clip: ClipModel, guidance: ResidualGuidance, candidates: Sequence[str] | None = None,
            k: int = 15) -> ResidualGuidance:
    """RAVE's shifted residual: project out the direction of the words r is nearest to (both ends).

    Those words carry the training data's content bias (what the well-lit photos show, not how they are lit), so
    guidance along the remaining direction changes lighting more and content less.
    """
    texts = list(candidates) if candidates is not None else vocabulary(clip)
    emb = text_embeddings(clip, texts)
    cos = emb @ guidance.vector.to(emb)
    top, bottom = cos.topk(k), (-cos).topk(k)
    toward = F.normalize((emb[top.indices] * top.values[:, None]).mean(0), dim=-1)
    away = F.normalize((emb[bottom.indices] * -bottom.values[:, None]).mean(0), dim=-1)
    d = F.normalize(toward + away, dim=-1)
    r = guidance.vector.to(d)
    r = F.normalize(r - d * (d @ r), dim=-1)
    pos = guidance.positive_mean.to(r)
    return ResidualGuidance(r, float(pos @ r), pos, guidance.negative_mean.to(r))
