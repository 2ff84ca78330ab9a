"""Presets: one versioned JSON format for every method, applied identically by the app, the API and the CLI.

A preset file::

    {"format": "clipkit-preset", "version": 1, "name": "ink-sketch", "method": "generate",
     "description": "...", "settings": {"prompt": "...", "steps": 200, ...}}

``settings`` holds fields of the method's Settings dataclass (missing ones take the dataclass default; saved
presets always write all of them so later default changes cannot alter a look). Unknown keys and wrong types are
rejected with the key, the expected type and the valid keys in the message, then the method's own ``validate()``
checks ranges. The settings a result PNG carries (``RunResult.record()["settings"]``, with ``"method"``) load back
as a preset, so any output can be reproduced.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clipkit.guidance.errors import ClipKitError, ParameterError
from clipkit.guidance.limits import MAX_JSON_DEPTH, json_depth, loads_json

FORMAT = "clipkit-preset"
VERSION = 1
USER_DIR_ENV = "CLIPKIT_USER_PRESETS"
TOP_KEYS = ("format", "version", "name", "method", "description", "settings")
REQUIRED_KEYS = ("format", "version", "method", "settings")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")
FILE_SUFFIXES = (".json", ".png")  # a reference ending so is read as a file, never looked up as a name
MAX_PRESET_BYTES = 1 << 20


class PresetError(ParameterError):
    """A preset that cannot be used as written; the message names the file, the key and what was expected."""


def user_preset_dir() -> Path:
    """Where the app saves presets: ``$CLIPKIT_USER_PRESETS`` or ``outputs/presets`` (ignored by git)."""
    env = os.environ.get(USER_DIR_ENV)
    return Path(env).expanduser() if env else Path("outputs") / "presets"


@dataclass
class Preset:
    """A validated preset: ``settings`` is complete (every field of the method's Settings)."""

    name: str
    method: str
    settings: dict[str, Any]
    description: str = ""
    path: Path | None = None

    def to_settings(self) -> Any:
        """The method's Settings dataclass instance these values describe."""
        from clipkit.registry import get_method

        return get_method(self.method).settings_cls(**self.settings)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "method": self.method,
                "description": self.description, "settings": dict(self.settings)}


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check one JSON value against a dataclass field's type; ints pass as floats, bools never pass as numbers."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _coerce(value, arm, where)
            except PresetError:
                continue
        raise PresetError(f"{where} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise PresetError(f"{where} must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if hint is type(None) or hint is None:
        if value is not None:
            raise PresetError(f"{where} must be null, got {value!r}")
        return None
    if hint is Any:
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PresetError(f"{where} must be a list ({_type_name(hint)}), got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise PresetError(f"{where} must be an object, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise PresetError(f"{where} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PresetError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PresetError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise PresetError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        return value
    return value


def settings_from_dict(method: str, values: dict[str, Any], source: str | None = None, partial: bool = True) -> Any:
    """Validated Settings instance of ``method`` from JSON-like values (unknown keys and wrong types rejected).

    ``source`` (a file name, "Generate settings") prefixes the messages; without it the method's own
    validation errors pass through unchanged, as a direct call of the method would raise them."""
    from clipkit.registry import get_method

    pre = f"{source}: " if source else ""
    m = get_method(method)
    if not isinstance(values, dict):
        raise PresetError(f"{pre}'settings' must be an object of {method} settings, got {type(values).__name__}")
    if json_depth(values) > MAX_JSON_DEPTH:
        raise PresetError(f"{pre}settings nested deeper than {MAX_JSON_DEPTH} levels; no setting needs that")
    valid = m.field_names()
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise PresetError(f"{pre}unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(k) for k in unknown)} for method '{method}'; "
                          f"valid settings: {', '.join(valid)}")
    if not partial:
        missing = [k for k in valid if k not in values]
        if missing:
            raise PresetError(f"{pre}missing settings {', '.join(missing)} for method '{method}'")
    hints = typing.get_type_hints(m.settings_cls)
    clean = {k: _coerce(v, hints.get(k, Any), f"{pre}setting '{k}'") for k, v in values.items()}
    try:
        settings = m.settings_cls(**clean)
        validate = getattr(settings, "validate", None)
        return validate() if callable(validate) else settings
    except PresetError:
        raise
    except ClipKitError as e:  # PromptError, ParameterError... from the method's validate()
        if not source:
            raise
        raise PresetError(f"{pre}{e}") from e
    except (ValueError, TypeError) as e:
        raise PresetError(f"{pre}{e}") from e


def text_overrides(method: str, items: dict[str, str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts (``clipkit batch --set``) as values of ``method``'s settings, by each field's declared
    type: a text field takes the text as it is (``prompt=1984`` is the prompt "1984"; ``null`` is None where the
    field may be None), any other field reads it as JSON (numbers, true/false, null, lists), falling back to the
    text (which the type check then names). Unknown keys pass through, for ``settings_from_dict`` to name."""
    from clipkit.registry import get_method

    hints = typing.get_type_hints(get_method(method).settings_cls)
    out: dict[str, Any] = {}
    for key, text in items.items():
        hint = hints.get(key)
        arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        takes_none = type(None) in arms
        textual = [a for a in arms if a is str or typing.get_origin(a) is typing.Literal]
        if textual and not (takes_none and text == "null"):
            out[key] = text
            continue
        try:
            out[key] = loads_json(text, f"setting '{key}'")
        except ValueError:
            out[key] = text
    return out


def settings_dict(settings: Any) -> dict[str, Any]:
    """All fields of a Settings instance as JSON-ready values."""
    return {f.name: _jsonable(getattr(settings, f.name)) for f in fields(settings)}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def parse_preset(data: Any, source: str = "preset") -> Preset:
    """Validate a decoded preset document (see module doc) into a Preset with complete settings."""
    if not isinstance(data, dict):
        raise PresetError(f"{source}: a preset is a JSON object, got {type(data).__name__}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise PresetError(f"{source}: nested deeper than {MAX_JSON_DEPTH} levels; no preset needs that")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise PresetError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(k) for k in unknown)}; a preset has only {', '.join(TOP_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise PresetError(f"{source}: missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if data["format"] != FORMAT:
        raise PresetError(f"{source}: 'format' must be '{FORMAT}', got {data['format']!r}")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise PresetError(f"{source}: 'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise PresetError(f"{source}: preset version {version} is newer than this clipkit reads ({VERSION}); "
                          "update clipkit")
    if version < 1:
        raise PresetError(f"{source}: 'version' must be >= 1, got {version}")
    method = data["method"]
    if not isinstance(method, str):
        raise PresetError(f"{source}: 'method' must be a string, got {method!r}")
    name = data.get("name", Path(source).stem if source.endswith(".json") else "preset")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PresetError(f"{source}: 'name' must be 1-80 letters, digits, spaces, '.', '_' or '-', got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise PresetError(f"{source}: 'description' must be a string, got {description!r}")
    try:
        settings = settings_from_dict(method, data["settings"], source)
    except PresetError:
        raise
    except ParameterError as e:  # unknown method
        raise PresetError(f"{source}: {e}") from e
    return Preset(name, method, settings_dict(settings), description)


def preset_from_record(record: dict[str, Any], name: str = "from-image", source: str = "record") -> Preset:
    """A preset from a result's settings record (``RunResult.record()`` or its ``"settings"``), to reproduce it."""
    from clipkit.registry import get_method

    settings = record.get("settings", record) if isinstance(record, dict) else record
    if not isinstance(settings, dict) or "method" not in settings:
        raise PresetError(f"{source}: carries no clipkit settings with a 'method' (not a clipkit output?)")
    if json_depth(settings) > MAX_JSON_DEPTH:
        raise PresetError(f"{source}: settings nested deeper than {MAX_JSON_DEPTH} levels; no setting needs that")
    values = dict(settings)
    method = values.pop("method")
    try:
        m = get_method(method)
    except ParameterError as e:
        raise PresetError(f"{source}: {e}") from e
    for key in m.record_only:
        values.pop(key, None)
    s = settings_from_dict(method, values, source)
    return Preset(name, method, settings_dict(s), f"reproduces {source}")


def read_preset_file(path: str | os.PathLike) -> Preset:
    """A preset from a .json preset file or from a clipkit .png output (its embedded settings)."""
    from clipkit.guidance.images import read_settings

    path = Path(path)
    if not path.is_file():
        raise PresetError(f"preset file not found: {path}")
    if path.suffix.lower() == ".png":
        try:
            record = read_settings(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise PresetError(f"{path}: cannot read embedded settings: {e}") from e
        if not record:
            raise PresetError(f"{path}: this PNG carries no clipkit settings")
        p = preset_from_record(record, name=_safe_name(path.stem), source=str(path))
    else:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: over {MAX_PRESET_BYTES // 1024} KB; a preset is a small JSON file")
        try:
            data = loads_json(path.read_text(encoding="utf-8"), str(path))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PresetError(f"{path}: not valid JSON: {e}") from e
        except ParameterError as e:  # nested too deeply
            raise PresetError(str(e)) from e
        p = parse_preset(data, str(path))
    p.path = path
    return p


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._ -]+", "-", text).strip(" -.")[:80]
    return name or "preset"


def shipped_preset_dirs() -> list[Path]:
    """Each method family ships its presets in its own folder (``clipkit/methods/<family>/presets``)."""
    from clipkit.registry import families

    return [f.presets_dir for f in families().values() if f.presets_dir.is_dir()]


def preset_dirs() -> list[Path]:
    return [*shipped_preset_dirs(), user_preset_dir()]


def _readable_presets() -> Iterator[Preset]:
    """Every valid preset file, shipped folders first, then the user's; invalid files are skipped."""
    for d in preset_dirs():
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                yield read_preset_file(path)
            except ParameterError:
                continue


def presets_by_method() -> dict[str, list[Preset]]:
    """``list_presets(method)`` for every method at once, each preset file read once (the app lists every tab's)."""
    found: dict[str, dict[str, Preset]] = {}
    for p in _readable_presets():
        found.setdefault(p.method, {}).setdefault(p.name, p)
    return {method: sorted(named.values(), key=lambda p: p.name) for method, named in found.items()}


def list_presets(method: str | None = None) -> list[Preset]:
    """Shipped then user presets (optionally of one method), sorted by name; invalid files are skipped."""
    if method is not None:
        return presets_by_method().get(method, [])
    out: dict[str, Preset] = {}
    for p in _readable_presets():
        out.setdefault(p.name, p)
    return sorted(out.values(), key=lambda p: p.name)


def find_named(name: str) -> Preset | None:
    """The shipped or saved preset called ``name`` (shipped first), or None."""
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    for d in preset_dirs():
        if (d / f"{name}.json").is_file():
            return read_preset_file(d / f"{name}.json")
    for p in list_presets():
        if p.name == name:
            return p
    return None


def load_preset(ref: str | os.PathLike | Preset) -> Preset:
    """A preset by name (shipped or saved), by .json path, or from a clipkit .png output.

    A reference ending in .json or .png is a file; otherwise a preset name comes first, then a file of that path
    (so a name never depends on what files happen to sit in the current folder)."""
    if isinstance(ref, Preset):
        return ref
    path = Path(ref).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES or (isinstance(ref, os.PathLike) and path.is_file()):
        return read_preset_file(path)
    found = find_named(str(ref))
    if found is not None:
        return found
    if path.is_file():
        return read_preset_file(path)
    names = ", ".join(p.name for p in list_presets()) or "none"
    raise PresetError(f"no preset named '{ref}'; known presets: {names} (or pass a .json / .png path)")


def shipped_names() -> set[str]:
    """Names of the presets the installed families ship (their file stems and the names inside them)."""
    names: set[str] = set()
    for d in shipped_preset_dirs():
        for path in d.glob("*.json"):
            names.add(path.stem)
            try:
                names.add(read_preset_file(path).name)
            except ParameterError:
                continue
    return names


def check_preset_name(name: Any) -> str:
    """A name a preset can be saved under and loaded back by: 1-80 letters, digits, spaces, '.', '_' or '-',
    starting with a letter or digit, not ending in .json or .png (such a reference is read as a file)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PresetError(f"preset name must be 1-80 letters, digits, spaces, '.', '_' or '-', starting with a "
                          f"letter or digit; got {name!r}")
    if name.lower().endswith(FILE_SUFFIXES) or name != name.strip():
        raise PresetError(f"preset name {name!r} cannot be loaded back by name (a name ending in .json or .png is "
                          "read as a file path); drop the extension")
    if _safe_name(name) != name:
        raise PresetError(f"preset name {name!r} cannot end in '.', '-' or a space; drop it")
    return name


def save_preset(preset: Preset, path: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write a preset (complete settings) as JSON; default path: the user preset folder, ``<name>.json``.

    Refused with a PresetError: a name that could not be loaded back (``check_preset_name``), the name of a shipped
    preset (it would shadow the save), and an existing file unless ``overwrite`` (another user's preset of the same
    name is never replaced silently; the check and the write are one atomic step)."""
    from clipkit.guidance.files import atomic_write

    if path is None:
        check_preset_name(preset.name)
        if preset.name in shipped_names():
            raise PresetError(f"'{preset.name}' is the name of a shipped preset; save yours under another name")
    parse_preset(preset.to_json(), preset.name)  # never write a file that would not load back
    path = Path(path) if path is not None else user_preset_dir() / f"{preset.name}.json"
    text = json.dumps(preset.to_json(), indent=2) + "\n"
    try:
        return atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)
    except FileExistsError as e:
        raise PresetExistsError(f"a preset named '{preset.name}' already exists ({path.name}); choose another "
                                "name, or replace it explicitly (overwrite)") from e


class PresetExistsError(PresetError):
    """Saving would replace an existing preset file, and overwriting was not asked for."""


def make_preset(method: str, settings: Any, name: str, description: str = "") -> Preset:
    """A Preset from a Settings instance or a dict of values (validated; the name must load back)."""
    check_preset_name(name)
    values = settings_dict(settings) if not isinstance(settings, dict) else settings
    s = settings_from_dict(method, dict(values), f"preset '{name}'")
    return Preset(name, method, settings_dict(s), description)


def preset_values(m: Any, preset: Preset) -> dict[str, Any]:
    """The settings ``preset`` gives method ``m`` (a registry Method): all of them, or for a preset of a method
    ``m`` borrows from, the ones both methods have."""
    if preset.method == m.name:
        return dict(preset.settings)
    if preset.method in m.borrows:
        return {k: v for k, v in preset.settings.items() if k in m.borrows[preset.method]}
    raise PresetError(f"preset '{preset.name}' is for method '{preset.method}', not '{m.name}'"
                      + (f" (it takes presets of {', '.join(m.borrows)} too)" if m.borrows else ""))


__all__ = ["FORMAT", "VERSION", "Preset", "PresetError", "PresetExistsError", "load_preset", "list_presets",
           "parse_preset", "preset_from_record", "preset_values", "read_preset_file", "save_preset", "make_preset",
           "check_preset_name", "settings_from_dict", "settings_dict", "shipped_preset_dirs", "text_overrides",
           "user_preset_dir"]
