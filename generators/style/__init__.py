"""Text-driven style transfer: CLIPstyler per-prompt networks, a feed-forward text-conditioned stylizer, PODA.

Methods (each a settings dataclass whose fields are a preset's keys, and one entry function):
``clipstyler`` (ClipStylerSettings), ``stylize`` (StylizeSettings; trained by ``train_stylizer``), ``poda``
(PodaSettings; feature-level API: ``pin_statistics``, ``apply_pin``, ``PinAugmenter``).
"""

from generators.style.clipstyler import ClipStylerSettings, apply_network, clipstyler
from generators.style.feedforward import StylizeSettings, TrainStylizerSettings, stylize, train_stylizer
from generators.style.poda import PinAugmenter, PodaSettings, apply_pin, pin_statistics, poda
from generators.style.presets import list_presets, load_preset

METHODS = {"clipstyler": (clipstyler, ClipStylerSettings), "stylize": (stylize, StylizeSettings),
           "poda": (poda, PodaSettings)}

__all__ = [
    "METHODS", "ClipStylerSettings", "PinAugmenter", "PodaSettings", "StylizeSettings", "TrainStylizerSettings",
    "apply_network", "apply_pin", "clipstyler", "list_presets", "load_preset", "pin_statistics", "poda",
    "stylize", "train_stylizer",
]
