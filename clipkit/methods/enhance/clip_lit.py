"""CLIP-LIT (Liang et al., ICCV 2023): a learned prompt pair guides an unsupervised backlit enhancement network.

The pair is a negative ("backlit") and a positive ("well-lit") prompt, each 16 learnable token embeddings fed through
the frozen CLIP text encoder. Training alternates, as the paper does:

1. prompt initialisation: cross-entropy over the softmax of the two prompt similarities (logit scale 100), backlit
   images labelled negative and well-lit images positive (``guidance.losses.prompt_pair_loss``);
2. enhancement: the network is trained so its outputs score as the positive prompt (``PromptPairTerm``) while a
   content term keeps them close to the input (``content.ContentTerm``);
3. prompt refinement: margin ranking between backlit, enhanced and well-lit images, so the pair keeps ranking the
   current outputs between the two (the enhanced ones nearer the well-lit side); then back to 2.

Prompt modules expose ``text_features() -> (positive, negative)`` unit vectors, so RAVE's latent-space pair
(``LatentPromptPair``) trains with the same functions. The parameter layout follows the published files
(``embedding_prompt``: row 0 negative, row 1 positive), so the authors' prompt pairs load into a matching real CLIP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipkit.guidance import losses
from clipkit.guidance.clip import ClipModel
from clipkit.guidance.errors import CheckpointError, ParameterError
from clipkit.guidance.guide import Term

from .metrics import pair_probability

LOGIT_SCALE = 100.0
MARGINS = (0.9, 0.2)  # large margin backlit->enhanced, small margin enhanced->well-lit (the paper's 0.9, 0.2)


def encode_token_embeddings(clip: ClipModel, embeddings: Tensor, tokens: Tensor) -> Tensor:
    """CLIP text features (N, D), unit norm, from token *embeddings* (N, L, W) instead of token ids.

    Same computation as ``open_clip.CLIP.encode_text`` after its embedding lookup; ``tokens`` only says where each
    sequence ends (the end-of-text token has the highest id). Gradients flow to ``embeddings``.
    """
    m = clip.model
    if getattr(m, "text_pool_type", "argmax") != "argmax":
        raise ParameterError(f"prompt learning needs a CLIP text tower pooled at the end token, {clip.name} is not")
    cast = m.transformer.get_cast_dtype()
    x = embeddings.to(cast) + m.positional_embedding.to(cast)
    x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = m.text_projection
    x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x.float(), dim=-1)


class TokenPromptPair(nn.Module):
    """Learnable (negative, positive) prompts of ``n_tokens`` token embeddings each, in CLIP's text-token space.

    Initialised from the embedding of "X X ... X" (the paper's placeholder), plus ``noise`` x N(0, 1) from
    ``generator`` on the learnable positions so the two prompts can separate.
    """

    def __init__(self, clip: ClipModel, n_tokens: int = 16, generator: torch.Generator | None = None,
                 noise: float = 0.02) -> None:
        super().__init__()
        self._clip = [clip]  # a list keeps CLIP out of this module's parameters and state dict
        tokens = clip.tokenize([" ".join(["X"] * n_tokens)] * 2)
        if int(tokens[0].argmax()) != n_tokens + 1:
            raise ParameterError(f"{n_tokens} tokens do not fit {clip.name}'s context of {tokens.shape[1]}")
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            emb = clip.model.token_embedding(tokens).float().clone()
            if noise:
                emb[:, 1 : n_tokens + 1] += noise * torch.randn(
                    emb[:, 1 : n_tokens + 1].shape, generator=generator).to(emb)
        self.embedding_prompt = nn.Parameter(emb)

    @property
    def clip(self) -> ClipModel:
        return self._clip[0]

    def text_features(self) -> tuple[Tensor, Tensor]:
        """(positive, negative) unit text features (D,), differentiable w.r.t. the token embeddings."""
        feats = encode_token_embeddings(self.clip, self.embedding_prompt, self.tokens.to(self.embedding_prompt.device))
        return feats[1], feats[0]


@dataclass(eq=False)
class BacklitProbabilityTerm(Term):
    """CLIP-LIT's enhancement loss as published: the mean softmax probability of the *negative* (backlit) prompt.

    Bounded in [0, 1], unlike the cross-entropy of ``guidance.guide.PromptPairTerm`` (-log p_positive), whose
    gradient keeps growing as an image already scores well-lit and, with a short run, pushes outputs to white.
    """

    positive: Tensor | None = None
    negative: Tensor | None = None
    logit_scale: float = LOGIT_SCALE
    name: str = "prompt_pair"

    def __call__(self, emb, src_emb, images, ctx):
        return 1 - pair_probability(emb, self.positive.to(emb), self.negative.to(emb), self.logit_scale).mean()


class LatentPromptPair(nn.Module):
    """Two learnable vectors in CLIP's joint space (row 0 negative, row 1 positive, as in RAVE's files)."""

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.guidance_embeddings = nn.Parameter(torch.randn(2, dim, generator=generator))

    def text_features(self) -> tuple[Tensor, Tensor]:
        """(positive, negative) unit vectors."""
        f = F.normalize(self.guidance_embeddings, dim=-1)
        return f[1], f[0]


def load_prompt_pair(path: str | os.PathLike, clip: ClipModel) -> nn.Module:
    """A published prompt-pair file (CLIP-LIT ``embedding_prompt`` or RAVE ``guidance_embeddings``) for ``clip``.

    The files hold CLIP ViT-B/32 embeddings, so they only mean something with that real CLIP (pass its weights to
    ``guidance.load_clip("ViT-B-32", pretrained=PATH)``); a shape mismatch says which CLIP the file needs.
    """
    from clipkit.methods.enhance.checkpoints import read_state_dict

    state, _ = read_state_dict(path)
    if "embedding_prompt" in state:
        emb = state["embedding_prompt"]
        pair = TokenPromptPair(clip, n_tokens=16, noise=0.0)
        want = tuple(pair.embedding_prompt.shape)
        if emb.ndim != 3 or emb.shape[0] != 2 or emb.shape[-1] != want[-1]:
            raise CheckpointError(f"{path}: prompt embeddings of shape {tuple(emb.shape)} do not fit {clip.name} "
                                  f"(needs (2, L, {want[-1]})); these were learned for CLIP ViT-B/32 (2, 77, 512)")
        if emb.shape[1] != clip.model.positional_embedding.shape[0]:
            raise CheckpointError(f"{path}: {emb.shape[1]} token positions, {clip.name} has "
                                  f"{clip.model.positional_embedding.shape[0]}; use CLIP ViT-B/32")
        pair.embedding_prompt = nn.Parameter(emb.float().clone())
        return pair
    if "guidance_embeddings" in state:
        emb = state["guidance_embeddings"]
        pair = LatentPromptPair(clip.embed_dim)
        if tuple(emb.shape) != tuple(pair.guidance_embeddings.shape):
            raise CheckpointError(f"{path}: latent prompts of shape {tuple(emb.shape)} do not fit {clip.name} "
                                  f"(embedding size {clip.embed_dim})")
        pair.guidance_embeddings = nn.Parameter(emb.float().clone())
        return pair
    raise CheckpointError(f"{path} holds neither 'embedding_prompt' (CLIP-LIT) nor 'guidance_embeddings' (RAVE)")


def welllit_probability(pair: nn.Module, image_emb: Tensor, logit_scale: float = LOGIT_SCALE) -> Tensor:
    """Softmax probability of the positive prompt for each image embedding (B,): CLIP's "well-lit" score."""
    return pair_probability(image_emb, *pair.text_features(), logit_scale)


def separation(pair: nn.Module, backlit_emb: Tensor, welllit_emb: Tensor) -> float:
    """Mean well-lit score of well-lit images minus that of backlit ones, in [-1, 1]: how well the pair separates."""
    with torch.no_grad():
        return (welllit_probability(pair, welllit_emb).mean() - welllit_probability(pair, backlit_emb).mean()).item()


def prompt_init_loss(pair: nn.Module, backlit_emb: Tensor, welllit_emb: Tensor) -> Tensor:
    """Stage 1: cross-entropy, well-lit images -> positive prompt (label 0), backlit -> negative (label 1)."""
    pos, neg = pair.text_features()
    emb = torch.cat([welllit_emb, backlit_emb])
    labels = torch.cat([torch.zeros(len(welllit_emb)), torch.ones(len(backlit_emb))]).long().to(emb.device)
    return losses.prompt_pair_loss(emb, pos, neg, labels, LOGIT_SCALE)


def margin_ranking_loss(
    pair: nn.Module,
    backlit_emb: Tensor,
    welllit_emb: Tensor,
    enhanced_emb: Tensor | None = None,
    previous_emb: Tensor | None = None,
    margins: tuple[float, float] = MARGINS,
) -> Tensor:
    """Stage 3: rank well-lit scores backlit < enhanced (< previous round's enhanced) < well-lit.

    Scores are well-lit probabilities; pairs across the big gap (from backlit) need ``margins[0]``, the steps
    between enhanced results and well-lit images ``margins[1]``. Without enhanced images only backlit < well-lit is
    asked, with margin 1.0 (the paper's first round). Batches are paired row by row (unpaired data: any order).
    """
    s_b = welllit_probability(pair, backlit_emb)
    s_w = welllit_probability(pair, welllit_emb)
    one = torch.ones_like(s_b)
    if enhanced_emb is None:
        return F.margin_ranking_loss(s_w, s_b, one, margin=1.0)
    big, small = margins
    chain = [welllit_probability(pair, enhanced_emb)]
    if previous_emb is not None:
        chain.insert(0, welllit_probability(pair, previous_emb))
    loss = F.margin_ranking_loss(s_w, s_b, one, margin=big) + F.margin_ranking_loss(chain[0], s_b, one, margin=big)
    for lo, hi in zip(chain, chain[1:] + [s_w]):
        loss = loss + F.margin_ranking_loss(hi, lo, one, margin=small)
    return loss
