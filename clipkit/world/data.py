"""Datasets over the procedural world, with hard-negative groups.

`WorldDataset` is an ordinary map-style dataset yielding (image, tokens), so
open_clip's training code or a plain DataLoader can use it.  Index i belongs to
group i // group_size: item 0 of a group is a random scene and the others each
differ from it in one attribute (TripletCLIP-style hard negatives), with
captions that name every attribute varied inside the group, so a batch built
from whole groups (`HardNegativeBatchSampler`) forces the model to tell
"a red star" from "a red cross" instead of memorising conjunctions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from torch.utils.data import Dataset, Sampler

from clipkit.world.scene import (
    SceneSpec,
    caption,
    check_shade,
    free_colour,
    is_heldout,
    oversized,
    render_batch,
    rotated,
    sample_scene,
    shaded,
    vary,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD,
STD = (0.26862954, 0.26130258, 0.27577711)  # the default preprocess of our configs

# How often each attribute is the one a hard negative changes.  Shape and
# position weigh most: colour, size, background and lighting are global image
# statistics a small CLIP learns first, while shape and position stayed at
# chance for 1,600 steps with shape 3 / position 1 (measured; see model cards).
VARY_WEIGHTS = {"shape": 5.0, "colour": 1.0, "size": 0.7, "position": 3.0,
                 "background": 1.5, "bg_colour": 0.3, "lighting": 0.5, "binding": 1.5}


def seeded(*parts: object) -> torch.Generator:
    """A torch.Generator seeded from a stable hash of `parts` (not Python's hash)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Apply open_clip's default mean/std to [0,1] images (B,3,H,W)."""
    mean = torch.tensor(MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class WorldDataset(Dataset):
    """Deterministic captioned scenes: item i is a function of (seed, split, i) only."""

    def __init__(self, tokenizer: Callable | None = None, seed: int = 0, split: str = "train",
                 length: int = 10_000_000, group_size: int = 4, size: int = 64,
                 noise: float = 0.02, normalized: bool = True, single_attribute: float = 0.5,
                 free_colour: float = 0.0, vary_weights: dict[str, float] | None = None,
                 easy: float = 0.0, easy_groups: int = 0, shade: float = 0.0, oversize: float = 0.0,
                 rotate: float = 0.0) -> None:
        self.tokenizer, self.seed, self.split = tokenizer, seed, split
        check_shade(shade)  # here, not first inside a DataLoader worker
        self.free_colour, self.shade = free_colour, shade
        for name, share in (("free_colour", free_colour), ("easy", easy), ("oversize", oversize), ("rotate", rotate)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name}={share} must be a fraction of the groups, in [0, 1]")
        self.oversize = oversize  # share of training groups whose large single objects are drawn oversized
        self.rotate = rotate  # share of training groups turned by a random angle
        # Curriculum: group k's base scene is "easy" (one object, plain background, bright light)
        # with probability easy * (1 - k / easy_groups), so shape is learned on clean
        # silhouettes before clutter; shape stayed near chance for 5,000 steps without it.
        self.easy, self.easy_groups = easy, easy_groups
        unknown = set(vary_weights or {}) - set(VARY_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown hard-negative attributes {sorted(unknown)}; known: {sorted(VARY_WEIGHTS)}")
        self.vary_weights = {**VARY_WEIGHTS, **(vary_weights or {})}
        self.length, self.group_size, self.size = length, group_size, size
        # `noise`: each image gets Gaussian pixel noise of a std drawn uniformly from [0, noise]; a guide
        # trained on noisy images has smoother, more image-like gradients (noise as cheap robustness)
        self.noise, self.normalized, self.single_attribute = noise, normalized, single_attribute

    def __len__(self) -> int:
        return self.length

    def _group(self, group: int) -> tuple[list[SceneSpec], frozenset[str]]:
        g = seeded(self.seed, self.split, group)
        p_easy = self.easy * max(0.0, 1.0 - group / self.easy_groups) if self.easy_groups else self.easy
        if self.split == "train" and p_easy > 0 and float(torch.rand((), generator=g)) < p_easy:
            base = replace(sample_scene(g, self.split, n_objects=1), background="plain", lighting="bright")
        else:
            base = sample_scene(g, self.split)
        if self.split == "train" and float(torch.rand((), generator=g)) < self.free_colour:
            base = replace(base, objects=tuple(free_colour(o, g) for o in base.objects))
        elif self.split == "train" and self.shade > 0:
            base = replace(base, objects=tuple(shaded(o, self.shade, g) for o in base.objects))
        scenes, varied = [base], set()
        names = list(self.vary_weights)
        weights = torch.tensor([self.vary_weights[n] for n in names])
        # Half of the groups vary one attribute only (e.g. four shapes, all else
        # equal): the loss inside such a group is about that attribute alone.
        single = float(torch.rand((), generator=g)) < self.single_attribute
        fixed = names[int(torch.multinomial(weights, 1, generator=g))]
        tries = 0
        while len(scenes) < self.group_size:
            tries += 1
            attr = fixed if single and tries < 20 else names[int(torch.multinomial(weights, 1, generator=g))]
            new = vary(base, attr, g)
            if new is None or new in scenes or is_heldout(new) != (self.split == "heldout"):
                continue
            scenes.append(new)
            varied.add(attr)
        # drawn only when asked for, so runs without it keep their exact data
        if self.split == "train" and self.oversize > 0 and float(torch.rand((), generator=g)) < self.oversize:
            scenes = oversized(scenes, g)
        if self.split == "train" and self.rotate > 0 and float(torch.rand((), generator=g)) < self.rotate:
            scenes = rotated(scenes, g)
        return scenes, frozenset(varied)

    def scene_and_caption(self, index: int, _cache: dict | None = None) -> tuple[SceneSpec, str]:
        """The scene and caption behind item `index` (for scripts and tests)."""
        group, k = divmod(index, self.group_size)
        if _cache is None or group not in _cache:
            found = self._group(group)
            if _cache is not None:
                _cache[group] = found
        scenes, varied = _cache[group] if _cache is not None else found
        text = caption(scenes[k], seeded(self.seed, self.split, group, k, "caption"), varied)
        return scenes[k], text

    def _images(self, scenes: list[SceneSpec], indices: list[int]) -> torch.Tensor:
        images = render_batch(scenes, self.size)
        if self.noise > 0:
            g = seeded(self.seed, self.split, indices[0], len(indices), "noise")
            sigma = self.noise * torch.rand(len(indices), 1, 1, 1, generator=g)
            images = (images + sigma * torch.randn(images.shape, generator=g)).clamp(0, 1)
        return normalize(images) if self.normalized else images

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor | str]]:
        """Batched fetch (DataLoader uses it): renders the whole batch at once."""
        cache: dict = {}
        pairs = [self.scene_and_caption(i, cache) for i in indices]
        images = self._images([s for s, _ in pairs], indices)
        texts = [t for _, t in pairs]
        tokens = self.tokenizer(texts) if self.tokenizer is not None else texts
        return [(images[j], tokens[j]) for j in range(len(indices))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | str]:
        return self.__getitems__([index])[0]


class HardNegativeBatchSampler(Sampler[list[int]]):
    """Batches made of whole hard-negative groups of a `WorldDataset`.

    Groups are already random scenes, so order only needs to be reproducible;
    `start` skips batches already seen, which is how training resumes.  With
    `world` > 1 processes, each gets its `rank`'s share of whole groups of every
    batch, so together they see exactly the batches one process would.
    """

    def __init__(self, dataset: WorldDataset, batch_size: int, start: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size % (dataset.group_size * world):
            raise ValueError(f"batch_size {batch_size} must be a multiple of the group size ({dataset.group_size}) "
                             f"times the processes ({world})")
        self.group_size = dataset.group_size
        self.groups_per_batch = batch_size // dataset.group_size
        self.n_batches = len(dataset) // batch_size
        self.start, self.rank, self.world = start, rank, world

    def __len__(self) -> int:
        return self.n_batches - self.start

    def __iter__(self) -> Iterator[list[int]]:
        size = self.groups_per_batch * self.group_size
        share = size // self.world
        for b in range(self.start, self.n_batches):
            first = b * size + self.rank * share
            yield list(range(first, first + share))
