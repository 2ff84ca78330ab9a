"""Style presets: ``presets/style-<name>.json`` holds exactly the keys of `ClipStylerSettings`.

The feed-forward stylizer and PODA take the keys they share with it (prompt, seed, size), so one artist preset
drives all three methods (only the keys in `SHARED` carry over).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from guidance.errors import ParameterError

SHARED = {"prompt", "seed", "size", "templates", "model", "pretrained"}
PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem.removeprefix("style-") for p in PRESETS_DIR.glob("style-*.json"))


def load_preset(name: str, method: str = "clipstyler") -> dict[str, Any]:
    """Settings for `method` from a preset name (``van-gogh``) or a JSON path; unknown keys are an error."""
    from generators.style import METHODS

    if method not in METHODS:
        raise ParameterError(f"unknown style method '{method}'; one of {sorted(METHODS)}")
    path = Path(name)
    if not path.suffix:
        path = PRESETS_DIR / f"style-{name}.json"
    if not path.is_file():
        raise ParameterError(f"style preset '{name}' not found at {path}; known: {', '.join(list_presets())}")
    data = json.loads(path.read_text())
    from generators.style.clipstyler import ClipStylerSettings

    known = {f.name for f in fields(ClipStylerSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParameterError(f"{path}: unknown keys {unknown}; a style preset holds ClipStylerSettings keys")
    wanted = {f.name for f in fields(METHODS[method][1])}
    if method != "clipstyler":  # steps, lr, ... mean different things per method: share only these
        wanted &= SHARED
    return {k: v for k, v in data.items() if k in wanted}
