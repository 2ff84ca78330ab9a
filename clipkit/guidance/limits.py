"""Bounds on what any input may make the toolkit allocate: image pixels, network sizes, config values, JSON depth.

Every surface (app, API, CLI, batch) reaches these through the one place that reads its inputs (``images`` for
pictures, each family's loader for networks, ``presets`` for JSON), so a hostile or careless input is refused with
a message saying what to do, before memory or time is spent on it.

- ``CLIPKIT_MAX_PIXELS``: the most pixels one image input may have (all images of a batch together); default 25 MP.
- ``CLIPKIT_MAX_PARAMS``: the most parameters a network built from a file's config may have; default 1e9.
"""

from __future__ import annotations

import json
import os
from typing import Any

from clipkit.guidance.errors import CheckpointError, ImageError, ParameterError

MAX_PIXELS_ENV = "CLIPKIT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 25_000_000
MIN_SIDE = 8  # below this no method has anything to work with (cutouts, pyramids, convolutions)
MAX_PARAMS_ENV = "CLIPKIT_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 1_000_000_000  # 4 GB of float32 weights
MAX_JSON_DEPTH = 50
CONFIG_MAX_INT = 1 << 20  # a width, a size, a count in a network config
CONFIG_MAX_COUNT = 256  # layers, blocks, heads, depth: each one builds modules
CONFIG_MAX_ITEMS = 256
_COUNT_WORDS = ("layers", "blocks", "depth", "n_res", "heads")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip().replace("_", "")
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError as e:
        raise ParameterError(f"${name}={os.environ[name]!r} must be a whole number") from e
    if value < 1:
        raise ParameterError(f"${name}={value} must be positive")
    return value


def max_pixels() -> int:
    """The pixel limit for one image input (``$CLIPKIT_MAX_PIXELS``, default 25 MP)."""
    return _env_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_params() -> int:
    """The parameter limit for a network built from a file's config (``$CLIPKIT_MAX_PARAMS``, default 1e9)."""
    return _env_int(MAX_PARAMS_ENV, DEFAULT_MAX_PARAMS)


def check_image_size(width: int, height: int, name: str = "image", count: int = 1) -> None:
    """Refuse an image input too small to work on or too large to hold, before its pixels are decoded."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"{name} is {width}x{height} pixels; each side needs at least {MIN_SIDE} pixels")
    limit = max_pixels()
    pixels = int(width) * int(height) * int(count)
    if pixels > limit:
        what = f"{count} images of {width}x{height}" if count > 1 else f"{width}x{height}"
        raise ImageError(
            f"{name} is {what} = {pixels:,} pixels; the limit is {limit:,} pixels ({limit / 1e6:.1f} MP, "
            f"${MAX_PIXELS_ENV}). Resize it first (e.g. to {_fit(width, height, limit)}). Backlit enhancement works "
            "in tiles (its tile setting, `clipkit enhance --tile`), so memory stays bounded for a large photo: "
            f"there, a server that can hold the pixels may raise ${MAX_PIXELS_ENV}"
        )


def _fit(width: int, height: int, limit: int) -> str:
    scale = (limit / max(1, width * height)) ** 0.5
    return f"{max(1, int(width * scale))}x{max(1, int(height * scale))}"


def check_network_size(params: int, where: str, limit: int | None = None) -> int:
    """Refuse a network whose parameter count (estimated from its config, before anything is built) is over the
    limit: a file of a few bytes must not make the server allocate gigabytes."""
    limit = max_params() if limit is None else limit
    if params > limit:
        raise CheckpointError(
            f"{where}: its config describes a network of {params:,} parameters ({params * 4 / 1e9:.1f} GB), over "
            f"the limit of {limit:,}; the file is damaged or not meant for this (${MAX_PARAMS_ENV} raises the limit)"
        )
    return params


def check_config(config: Any, where: str, *, max_int: int = CONFIG_MAX_INT, max_count: int = CONFIG_MAX_COUNT,
                 max_items: int = CONFIG_MAX_ITEMS, max_depth: int = 8) -> Any:
    """Refuse a network config with values no network of ours needs: integers over ``max_int`` (over
    ``max_count`` for keys that count layers or blocks), lists over ``max_items`` items, nesting over ``max_depth``.

    Cheap (no module is built), so it goes before any constructor a config drives."""
    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > max_depth:
            raise CheckpointError(f"{where}: the config nests deeper than {max_depth} levels")
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            bound = max_count if any(w in key.lower() for w in _COUNT_WORDS) else max_int
            if not -bound <= value <= bound:
                raise CheckpointError(f"{where}: config value {key or 'value'}={value} is out of range "
                                      f"(at most {bound}); the file is damaged or not meant for this")
        elif isinstance(value, float):
            if value != value or abs(value) > 1e12:
                raise CheckpointError(f"{where}: config value {key or 'value'}={value} is out of range")
        elif isinstance(value, dict):
            if len(value) > max_items:
                raise CheckpointError(f"{where}: the config has over {max_items} keys")
            stack.extend((v, str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            if len(value) > max_items:
                raise CheckpointError(f"{where}: config value {key} has {len(value)} items (at most {max_items})")
            stack.extend((v, key, depth + 1) for v in value)
    return config


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (a scalar is 0); iterative, no recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _text_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, strings skipped: checked before the recursive decoder runs."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(text: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` (instead of a RecursionError from deep inside
    the decoder); raises ParameterError naming ``where``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if _text_depth(text) > max_depth:
        raise ParameterError(f"{where}: JSON nested deeper than {max_depth} levels; no clipkit file needs that")
    try:
        return json.loads(text)
    except RecursionError as e:  # not reached after the depth check; kept as a guard
        raise ParameterError(f"{where}: JSON nested too deeply") from e
