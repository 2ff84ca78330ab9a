"""Style presets: ``presets/style-<name>.json`` in the project's preset format (see presets/README.md).

Artist presets are written for method ``clipstyler`` (prompt, loss weights, crop settings, seed). The feed-forward
stylizer and PODA take the keys in `SHARED` from them, so one artist preset drives all three methods. This reader
needs no method registry, so the style CLI works before (and without) the app registering the methods.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from guidance.errors import ParameterError

SHARED = {"prompt", "seed", "size", "templates", "model", "pretrained"}
PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
FORMAT, VERSION = "clipkit-preset", 1


def list_presets() -> list[str]:
    return sorted(p.stem.removeprefix("style-") for p in PRESETS_DIR.glob("style-*.json"))


def read_preset(name: str) -> tuple[str, dict[str, Any]]:
    """(method, settings) of a style preset given by short name (``van-gogh``) or path."""
    path = Path(name)
    if not path.suffix:
        path = PRESETS_DIR / f"style-{name}.json"
    if not path.is_file():
        raise ParameterError(f"style preset '{name}' not found at {path}; known: {', '.join(list_presets())}")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION or not isinstance(data.get("settings"), dict):
        raise ParameterError(f"{path} is not a {FORMAT} v{VERSION} file (need format, version, method, settings)")
    return data.get("method", ""), data["settings"]


def load_preset(name: str, method: str = "clipstyler") -> dict[str, Any]:
    """Settings for `method` from a style preset; keys the preset's own method does not know are an error."""
    from generators.style import METHODS

    if method not in METHODS:
        raise ParameterError(f"unknown style method '{method}'; one of {sorted(METHODS)}")
    own, values = read_preset(name)
    if own not in METHODS:
        raise ParameterError(f"preset '{name}' is for method '{own}', not a style method ({sorted(METHODS)})")
    known = {f.name for f in fields(METHODS[own][1])}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParameterError(f"preset '{name}': unknown keys {unknown} for method '{own}'; valid: {sorted(known)}")
    wanted = {f.name for f in fields(METHODS[method][1])}
    if method != own:  # steps, lr, ... mean different things per method: share only these
        wanted &= SHARED
    return {k: v for k, v in values.items() if k in wanted}
