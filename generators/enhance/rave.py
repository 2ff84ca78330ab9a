"""RAVE (Gaintseva et al., 2024): CLIP guidance for backlit enhancement without prompts in token space.

(a) ``LatentPromptPair``: the (negative, positive) prompt pair learned directly as two vectors of CLIP's joint
    embedding space (no text encoder in the loop); it trains with CLIP-LIT's functions (``clip_lit``).
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
from torch import Tensor, nn

from guidance import losses
from guidance.clip import ClipModel
from guidance.guide import ResidualVectorTerm


class LatentPromptPair(nn.Module):
    """Two learnable vectors in CLIP's joint space (row 0 negative, row 1 positive, as in RAVE's files)."""

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.guidance_embeddings = nn.Parameter(torch.randn(2, dim, generator=generator))

    def text_features(self) -> tuple[Tensor, Tensor]:
        """(positive, negative) unit vectors."""
        f = F.normalize(self.guidance_embeddings, dim=-1)
        return f[1], f[0]


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


def main(argv: list[str] | None = None) -> int:
    """``python -m generators.enhance.rave --backlit DIR --welllit DIR [--clip NAME --clip-weights PATH]``:
    compute r from two folders, print the words nearest to it (both ends) and optionally save it."""
    import argparse
    import json

    from guidance.runs import save_safetensors

    from .data import UnpairedData
    from .train import load_guide_clip

    ap = argparse.ArgumentParser(prog="python -m generators.enhance.rave", description=main.__doc__.split(":")[0])
    ap.add_argument("--backlit", required=True)
    ap.add_argument("--welllit", required=True)
    ap.add_argument("--clip", default="world-guide")
    ap.add_argument("--clip-weights", default=None)
    ap.add_argument("--size", type=int, default=224, help="centre crop side the images are encoded at")
    ap.add_argument("--words", default=None, help="text file of candidate prompts, one a line (default: vocabulary)")
    ap.add_argument("-k", type=int, default=15)
    ap.add_argument("--save", default=None, help="write r, its threshold and the two means to this .safetensors")
    args = ap.parse_args(argv)
    clip = load_guide_clip(args.clip, args.clip_weights)
    data = UnpairedData.from_folders(args.backlit, args.welllit, args.size)
    rg = ResidualGuidance.from_images(clip, data.backlit.all(), data.welllit.all())
    words = [w.strip() for w in open(args.words, encoding="utf-8") if w.strip()] if args.words else None
    print(json.dumps({"threshold": rg.threshold, **nearest_prompts(clip, rg.vector, words, args.k)}, indent=1))
    if args.save:
        save_safetensors({k: v.contiguous() for k, v in rg.tensors().items()}, args.save, {"clip": args.clip})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
