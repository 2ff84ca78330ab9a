"""One resolver for every kind of weight: an explicit path, then the usual local caches, then the models shipped
with an installed package, then one clear error naming the file and where to put it (no model hub is reached).

Packages declare what they ship through the ``clipkit.weights`` entry-point group: each entry is a function
``register(weights)`` that calls ``register_shipped(kind, folder)`` (and may register model configs with
``register_configs``, as the world test bed does for its open_clip configs), so the guidance core names no folder
of the test bed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from clipkit.guidance.errors import WeightsNotFoundError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "clipkit.weights"
KINDS = ("clip", "latent-diffusion", "stylizer", "enhance", "stylegan")

_SHIPPED: dict[str, list[Path]] = {}
_PATTERNS: dict[tuple[str, Path], str] = {}  # (kind, folder) -> glob of the names that are of that kind
_CONFIGS: dict[str, list[Path]] = {}  # kind -> folders of model configs (for "clip": open_clip JSON configs)
_LOCK = threading.RLock()
_LOADED = False


def register_shipped(kind: str, folder: str | os.PathLike, pattern: str = "*") -> None:
    """Declare ``folder`` as holding shipped models of ``kind`` (idempotent); ``pattern`` (a glob on the entry's
    name) picks them out where one folder holds models of several kinds."""
    path = _add_folder(_SHIPPED, kind, folder)
    with _LOCK:
        _PATTERNS[(kind, path)] = pattern


def register_configs(kind: str, folder: str | os.PathLike) -> None:
    """Declare ``folder`` as holding model configs of ``kind`` (idempotent); for "clip" these are open_clip JSON
    configs, which ``guidance.clip`` adds to open_clip when it first imports it (a provider need not import
    open_clip, which the app's first page does not need)."""
    _add_folder(_CONFIGS, kind, folder)


def _add_folder(registry: dict[str, list[Path]], kind: str, folder: str | os.PathLike) -> Path:
    """Add ``folder`` to ``registry[kind]`` once (a known kind only); returns it resolved."""
    if kind not in KINDS:
        raise ValueError(f"unknown weights kind {kind!r}; one of {KINDS}")
    path = Path(folder).resolve()
    with _LOCK:
        dirs = registry.setdefault(kind, [])
        if path not in dirs:
            dirs.append(path)
    return path


def config_dirs(kind: str) -> list[Path]:
    """Folders of model configs of ``kind``, from every installed provider."""
    _load_providers()
    return list(_CONFIGS.get(kind, ()))


def _load_providers() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True  # before calling providers: one that asks for shipped_dirs() must not recurse
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                register: Callable[..., None] = ep.load()
                register()
            except Exception as e:  # a provider that fails costs its models, not the others
                log.warning("weights provider %s failed: %s", ep.name, e)


def shipped_dirs(kind: str) -> list[Path]:
    """Folders of shipped models of ``kind``, from every installed provider."""
    _load_providers()
    return list(_SHIPPED.get(kind, ()))


def shipped_names(kind: str, suffix: str = ".safetensors", folders: bool = False) -> list[str]:
    """Names of the shipped models of ``kind``: file stems with ``suffix``, or sub-folder names."""
    names = set()
    for d in shipped_dirs(kind):
        if d.is_dir():
            for p in d.glob(_PATTERNS.get((kind, d), "*")):
                if (folders and p.is_dir()) or (not folders and p.is_file() and p.name.endswith(suffix)):
                    names.add(p.name if folders else p.name[: -len(suffix)])
    return sorted(names)


def _candidates(ref: str, suffixes: Sequence[str]) -> list[str]:
    return [ref] + [ref + s for s in suffixes if not ref.endswith(s)]


def resolve(
    kind: str,
    ref: str | os.PathLike,
    *,
    suffixes: Sequence[str] = (".safetensors",),
    caches: Iterable[str | os.PathLike] = (),
    folder: bool = False,
    hint: str = "",
) -> Path:
    """The local file (or model folder, with ``folder``) that ``ref`` names: a path as given, then each cache
    folder, then the shipped models of ``kind`` (by name, or by the file name of a path that moved). Raises
    ``WeightsNotFoundError`` naming everything that was looked at and where the file should go."""
    exists = Path.is_dir if folder else Path.is_file
    given = Path(ref).expanduser()
    if exists(given):
        return given
    caches = [Path(c).expanduser() for c in caches]
    name = given.name
    for root in [*caches, *shipped_dirs(kind)]:
        pattern = _PATTERNS.get((kind, root), "*")
        for cand in _candidates(str(ref), suffixes) + _candidates(name, suffixes):
            path = root / cand
            if exists(path) and path.match(pattern):
                return path
    shipped = shipped_names(kind, suffixes[0] if suffixes else "", folders=folder)
    looked = ", ".join(str(c) for c in caches) or "no cache folder"
    raise WeightsNotFoundError(
        f"{kind} weights '{ref}' not found: not a {'folder' if folder else 'file'} here, not in {looked}, and not "
        f"shipped (shipped: {', '.join(shipped) or 'none'}). Put the file at an explicit path and pass it"
        + (f", or {hint}" if hint else "") + "."
    )
