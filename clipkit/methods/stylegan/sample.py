"""Sampling a StyleGAN2: images from seeds, with truncation toward the average latent.

Image ``i`` of a run comes from z drawn with seed ``seed + i``, so any image of a grid re-runs alone (count 1,
that seed); the run returns the W latents as an artifact the editing methods start from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.runs import CancelToken, RunResult, StepCallback, StepInfo, resolve_settings
from clipkit.methods.stylegan.models import DEFAULT_GENERATOR, get_generator, to_unit
from clipkit.methods.stylegan.network import NOISE_MODES


@dataclass
class SampleSettings:
    """Every knob of a StyleGAN sample; a preset for method 'stylegan' holds exactly these keys."""

    generator: str = DEFAULT_GENERATOR
    seed: int = 0
    count: int = 8
    truncation: float = 0.7  # psi: 1 = the generator's own spread, 0 = the average image
    truncation_cutoff: int | None = None  # truncate only the first layers (coarse styles); None = all
    noise_mode: str = "const"

    def validate(self) -> SampleSettings:
        if not 1 <= self.count <= 64:
            raise ParameterError(f"count={self.count} must be in 1..64")
        if not -1 <= self.truncation <= 2:
            raise ParameterError(f"truncation={self.truncation} must be in [-1, 2]")
        if self.noise_mode not in NOISE_MODES:
            raise ParameterError(f"noise_mode={self.noise_mode!r} must be one of {', '.join(NOISE_MODES)}")
        if not self.generator:
            raise ParameterError("generator must name a StyleGAN2 (e.g. 'world-stylegan2') or a file")
        return self


def latents_for_seeds(style_dim: int, seeds: list[int]) -> torch.Tensor:
    """z ``[len(seeds), D]``, row i from its own seed (the same z whatever the batch)."""
    return torch.stack([torch.randn(style_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _wplus(g, z: torch.Tensor, s: SampleSettings) -> torch.Tensor:
    w = g.truncate(g.mapping(z), s.truncation, s.truncation_cutoff)
    return w if w.ndim == 3 else g.w_to_wplus(w)


def _noise(s: SampleSettings, seed: int) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed) if s.noise_mode == "random" else None


def stylegan_sample(
    settings: SampleSettings | None = None,
    clip: object | None = None,
    callback: StepCallback | None = None,
    cancel: CancelToken | None = None,
    progress: bool = False,
    **overrides,
) -> RunResult:
    """Sample ``count`` images from seeds ``seed .. seed + count - 1``; the W latents come back as an artifact."""
    s = resolve_settings(SampleSettings, settings, overrides)
    t0 = time.perf_counter()
    g = get_generator(s.generator)
    t_load = time.perf_counter() - t0
    seeds = [s.seed + i for i in range(s.count)]
    z = latents_for_seeds(g.style_dim, seeds).to(g.device)
    record = {"method": "stylegan", **asdict(s), "seeds": seeds}
    if cancel is not None and cancel.cancelled:
        return RunResult(torch.empty(0, 3, g.size, g.size), record, [], {"load_s": t_load}, cancelled=True)
    t1 = time.perf_counter()
    with torch.inference_mode():
        # one image at a time: a batch changes the summation order of the mapping's matrix products and the
        # convolutions, and image i must equal its seed run alone bit for bit (on CPU, batching a fused
        # modulated conv saves nothing: bench/stylegan.py)
        wplus = torch.cat([_wplus(g, z[i:i + 1], s) for i in range(s.count)])
        images = torch.cat([to_unit(g.synthesis(wplus[i:i + 1], noise_mode=s.noise_mode,
                                                generator=_noise(s, seeds[i]))) for i in range(s.count)])
    # clones outside inference mode: ordinary tensors, which a later run may use in autograd (as a target)
    images, wplus = images.cpu().clone(), wplus.cpu().clone()
    if callback is not None:
        callback(StepInfo(1, 1, {}, images))
    latents = Artifact("latent/wplus", {"wplus": wplus, "z": z.cpu()},
                       {"generator": s.generator, "seeds": seeds, "truncation": s.truncation,
                        "noise_mode": s.noise_mode})
    return RunResult(images, record, [], {"load_s": t_load, "sample_s": time.perf_counter() - t1},
                     artifacts={"latent": latents})
