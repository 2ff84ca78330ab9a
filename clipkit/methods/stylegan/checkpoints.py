"""Load StyleGAN2 generators from the published formats, save them as safetensors, convert between them.

Three formats, told apart by content (``detect_format``), all loaded by ``load_stylegan(path)``:

* ``torch``: rosinality's stylegan2-pytorch ``.pt`` files, ``{'g_ema': state_dict, 'latent_avg': tensor, ...}``
  (converted weights) or training checkpoints ``{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args'}``. Read with
  ``torch.load(weights_only=True)`` only (plus ``argparse.Namespace`` for ``args``, a plain attribute bag); the
  architecture is inferred from the tensor shapes.
* ``pickle``: NVIDIA's stylegan2-ada-pytorch / stylegan3 network pickles (``{'G', 'D', 'G_ema', ...}``). Those
  pickles embed Python source (``torch_utils.persistence``) that NVIDIA's loader executes. Here a restricted
  unpickler turns every persistent object into plain data (class name + state) and never runs ``module_src``; any
  global other than tensor/storage rebuilding, ``OrderedDict``, ``EasyDict``, sets and numpy scalars/arrays (never of
  object dtype) is refused before anything is called; tensor views are bounds-checked against their storage.
  ``G_ema``'s parameters are then renamed onto the port-style ``Generator``.
* ``safetensors``: the project's own format (``save_generator``): the state dict plus ``latent_avg`` and a JSON
  ``config`` in the metadata. The config is bounds-checked before anything is allocated.

Every failure is a ``CheckpointError`` (or subclass) whose message names the file and what is wrong.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipkit.guidance.errors import CheckpointError, WeightsNotFoundError
from clipkit.guidance.files import file_sha256
from clipkit.methods.stylegan.network import DEFAULT_BLUR, Generator, default_channels, make_kernel, resolutions

FORMAT = "clipkit-stylegan2"
FORMAT_VERSION = 1

# Refuse before allocating: the largest published StyleGAN2 (1024 px, config F) has ~30 M parameters + buffers.
MAX_SIZE = 2048
MAX_STYLE_DIM = 1024
MAX_N_MLP = 16
MAX_CHANNELS = 2048
MAX_PARAMETERS = 150_000_000  # parameters + buffers: 600 MB in fp32
MAX_PICKLE_STORAGE_BYTES = 8 << 30  # all tensors of one NVIDIA pickle (G, D, G_ema, augment pipe) together

_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6, non-zip) format starts with a pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_CONFIG_KEYS = ("size", "style_dim", "n_mlp", "channel_multiplier", "blur_kernel", "lr_mlp", "channels", "conv_clamp")


class UnsafeCheckpointError(CheckpointError):
    """The file would run code when unpickled (it references a callable that is not a data constructor)."""


class UnsupportedCheckpointError(CheckpointError):
    """A readable file holding a network this loader does not handle (StyleGAN3, conditional, other architectures)."""


class CheckpointLimitError(CheckpointError):
    """The file declares a network beyond the size limits; refused before allocating it."""


# ==================================================================================================== config checks
def estimate_parameters(config: Mapping[str, Any]) -> int:
    """Number of values in the state dict (parameters + buffers) of ``Generator(**config)``, computed, not built."""
    d, n_mlp = int(config["style_dim"]), int(config["n_mlp"])
    ch = {int(k): int(v) for k, v in config["channels"].items()}
    taps = len(config.get("blur_kernel") or DEFAULT_BLUR)

    def conv(cin: int, cout: int, k: int, up: bool) -> int:  # weight + affine + bias + noise.weight (+ blur)
        return cout * cin * k * k + d * cin + cin + cout + 1 + (taps * taps if up else 0)

    def torgb(cin: int, up: bool) -> int:
        return 3 * cin + d * cin + cin + 3 + (taps * taps if up else 0)

    total = n_mlp * (d * d + d) + ch[4] * 16 + conv(ch[4], ch[4], 3, False) + torgb(ch[4], False) + 16
    for res in resolutions(int(config["size"]))[1:]:
        cin, cout = ch[res // 2], ch[res]
        total += conv(cin, cout, 3, True) + conv(cout, cout, 3, False) + torgb(cout, True) + 2 * res * res
    return total


def _int(value: Any, name: str, source: str) -> int:
    ok = isinstance(value, int) or isinstance(value, float) and math.isfinite(value) and value == int(value)
    if isinstance(value, bool) or not ok:
        raise CheckpointError(f"{source}: {name} must be an integer, got {value!r}")
    return int(value)


def _finite(value: Any, name: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{source}: {name} must be a finite number, got {value!r}")
    return float(value)


def check_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Validate a generator config against the limits without allocating anything; return it normalised."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{source}: the generator config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: unknown generator config keys {unknown}; known: {list(_CONFIG_KEYS)}")
    missing = [k for k in ("size", "style_dim", "n_mlp") if k not in config]
    if missing:
        raise CheckpointError(f"{source}: generator config lacks {missing}")
    size = _int(config["size"], "size", source)
    if size < 4 or size > MAX_SIZE or size & (size - 1):
        raise CheckpointLimitError(f"{source}: size {size} refused: must be a power of 2 between 4 and {MAX_SIZE}")
    style_dim = _int(config["style_dim"], "style_dim", source)
    if not 1 <= style_dim <= MAX_STYLE_DIM:
        raise CheckpointLimitError(f"{source}: style_dim {style_dim} refused: must be within 1..{MAX_STYLE_DIM}")
    n_mlp = _int(config["n_mlp"], "n_mlp", source)
    if not 0 <= n_mlp <= MAX_N_MLP:
        raise CheckpointLimitError(f"{source}: n_mlp {n_mlp} refused: must be within 0..{MAX_N_MLP}")
    multiplier = _int(config.get("channel_multiplier", 2), "channel_multiplier", source)
    if not 1 <= multiplier <= 8:
        raise CheckpointLimitError(f"{source}: channel_multiplier {multiplier} refused: must be within 1..8")
    lr_mlp = _finite(config.get("lr_mlp", 0.01), "lr_mlp", source)
    if lr_mlp <= 0:
        raise CheckpointError(f"{source}: lr_mlp must be > 0, got {lr_mlp}")
    clamp = config.get("conv_clamp")
    if clamp is not None:
        clamp = _finite(clamp, "conv_clamp", source)
        if clamp < 0:
            raise CheckpointError(f"{source}: conv_clamp must be >= 0 or null, got {clamp}")
    blur = config.get("blur_kernel", list(DEFAULT_BLUR))
    if not isinstance(blur, (list, tuple)) or len(blur) not in (2, 4, 6, 8):
        raise CheckpointError(f"{source}: blur_kernel must be a list of 2, 4, 6 or 8 numbers, got {blur!r}")
    blur = [_finite(v, "blur_kernel", source) for v in blur]
    if sum(blur) == 0:
        raise CheckpointError(f"{source}: blur_kernel sums to 0")
    channels = dict(default_channels(size, multiplier))
    given = config.get("channels") or {}
    if not isinstance(given, Mapping):
        raise CheckpointError(f"{source}: channels must be an object {{resolution: channels}}, got {given!r}")
    for k, v in given.items():
        res = _int(int(k) if isinstance(k, str) and k.isdigit() else k, "channels key", source)
        if res in channels:
            channels[res] = _int(v, f"channels[{res}]", source)
    bad = {r: c for r, c in channels.items() if not 1 <= c <= MAX_CHANNELS}
    if bad:
        raise CheckpointLimitError(f"{source}: channel counts {bad} refused: must be within 1..{MAX_CHANNELS}")
    out = {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channel_multiplier": multiplier,
        "blur_kernel": blur,
        "lr_mlp": lr_mlp,
        "channels": channels,
        "conv_clamp": clamp,
    }
    n = estimate_parameters(out)
    if n > MAX_PARAMETERS:
        raise CheckpointLimitError(
            f"{source}: the declared generator has {n:,} parameters and buffers ({n * 4 / 2**30:.1f} GiB), over the "
            f"limit of {MAX_PARAMETERS:,}; refused before allocating"
        )
    return out


def _channel_multiplier_for(size: int, channels: Mapping[int, int]) -> int | None:
    for m in (2, 1, 4, 8, 3):
        if default_channels(size, m) == dict(channels):
            return m
    return None


# ==================================================================================================== building
def _describe(config: Mapping[str, Any]) -> str:
    return f"size {config['size']}, style_dim {config['style_dim']}, n_mlp {config['n_mlp']}"


def _shape_report(expected: Mapping[str, tuple], got: Mapping[str, tuple], limit: int = 8) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [
        f"{k} {tuple(got[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in got and tuple(got[k]) != tuple(expected[k])
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def build_generator(
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    latent_avg: Tensor | None,
    source: str = "state dict",
) -> Generator:
    """Check ``config`` (limits) and ``state`` (keys, shapes) first, then allocate and load strictly.

    ``latent_avg`` None = estimated as the mean of 4096 mapped z (seed 0); ``G.latent_avg_estimated`` says so.
    Returns the generator in eval mode with gradients off for its parameters (latents can still require grad).
    """
    cfg = check_config(config, source)
    with torch.device("meta"):
        G = Generator(**cfg)
    expected = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    report = _shape_report(expected, got)
    if report:
        raise CheckpointError(f"{source}: does not match a StyleGAN2 generator of {_describe(cfg)}: {report}")
    not_float = [k for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{source}: tensors {not_float[:8]} are not floating point")
    if latent_avg is not None and latent_avg.numel() != cfg["style_dim"]:
        raise CheckpointError(
            f"{source}: latent_avg has shape {tuple(latent_avg.shape)}, expected {cfg['style_dim']} values"
        )
    G = G.to_empty(device="cpu")
    G.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    G.latent_avg_estimated = latent_avg is None
    if latent_avg is None:
        G.latent_avg.zero_()
        latent_avg = G.mean_latent(4096)
    G.set_latent_avg(latent_avg.to(torch.float32))
    return G.eval().requires_grad_(False)


def infer_port_config(shapes: Mapping[str, tuple], source: str = "state dict") -> dict:
    """Architecture of a port-style state dict from its tensor shapes alone (lr_mlp = 0.01, the port's default)."""
    need = ["input.input", "conv1.conv.weight", "conv1.conv.modulation.weight"]
    missing = [k for k in need if k not in shapes]
    if missing:
        raise CheckpointError(f"{source}: not a StyleGAN2 generator state dict (rosinality names): lacks {missing}")
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in shapes and n_mlp <= MAX_N_MLP:
        n_mlp += 1
    n_rgbs = 0
    while f"to_rgbs.{n_rgbs}.conv.weight" in shapes and n_rgbs <= 10:
        n_rgbs += 1
    size = 4 * 2**n_rgbs
    style_dim = int(shapes["conv1.conv.modulation.weight"][-1])
    channels = {4: int(shapes["input.input"][1])}
    for j in range(n_rgbs):
        key = f"convs.{2 * j}.conv.weight"
        if key not in shapes or len(shapes[key]) != 5:
            raise CheckpointError(f"{source}: lacks {key} (or it is not [1, out, in, k, k]) for resolution {8 * 2**j}")
        channels[8 * 2**j] = int(shapes[key][1])
    multiplier = _channel_multiplier_for(size, channels) if size <= MAX_SIZE else None
    return {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channel_multiplier": multiplier or 2,
        "blur_kernel": list(DEFAULT_BLUR),
        "lr_mlp": 0.01,
        "channels": channels,
        "conv_clamp": None,
    }


# ==================================================================================================== format detection
def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"StyleGAN checkpoint {path} does not exist (or is not a file)")
    return path


def detect_format(path: str | os.PathLike) -> str:
    """'torch' (torch.save zip or legacy), 'pickle' (NVIDIA network pickle) or 'safetensors', from the bytes."""
    path = _resolve(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    if not head:
        raise CheckpointError(f"{path}: the file is empty")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= min(size - 8, 100 << 20) and head[8:9] == b"{":
            return "safetensors"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    raise CheckpointError(
        f"{path}: unknown format (first bytes {head[:8]!r}); expected a rosinality .pt (torch.save), an NVIDIA "
        f"network .pkl or a clipkit .safetensors file"
    )


# ==================================================================================================== torch (port)
def _torch_load(path: Path) -> Any:
    zipped = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            # mmap: storages are views of the file, so declared sizes cannot make the process allocate more.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        detail = [line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise UnsafeCheckpointError(
            f"{path}: holds pickled objects other than tensors and plain containers, refused (torch files are read "
            f"with weights_only=True; nothing in the file was run). {detail[0][:300] if detail else ''}"
        ) from e
    except Exception as e:  # zip, EOF, storage and unpickling errors of corrupt files
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e


def _strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_port_checkpoint(path: str | os.PathLike) -> Generator:
    """A rosinality stylegan2-pytorch ``.pt`` (converted weights or training checkpoint) -> ``Generator``.

    Uses ``g_ema`` (the generator everyone samples from); without ``latent_avg`` in the file (training checkpoints)
    the truncation centre is estimated from 4096 z (seed 0). lr_mlp is taken as the port's 0.01 (not stored).
    """
    path = _resolve(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if "g_ema" in ckpt:
        state = ckpt["g_ema"]
    elif "input.input" in ckpt or "module.input.input" in ckpt:
        state = ckpt
    else:
        raise CheckpointError(
            f"{path}: no 'g_ema' generator in this checkpoint (keys: {sorted(map(str, ckpt))[:12]}); expected a "
            f"rosinality stylegan2-pytorch file"
        )
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'g_ema' is not a state dict of tensors")
    bare = state is ckpt
    state = _strip_prefix(state)
    latent_avg = state.pop("latent_avg", None) if bare else ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, Tensor):
        raise CheckpointError(f"{path}: 'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    source = str(path)
    config = infer_port_config({k: tuple(v.shape) for k, v in state.items()}, source)
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        checks = [("size", "size"), ("latent", "style_dim"), ("n_mlp", "n_mlp")]
        if config["size"] >= 64:  # below 64 px the multiplier changes nothing
            checks.append(("channel_multiplier", "channel_multiplier"))
        for attr, key in checks:
            if hasattr(args, attr) and getattr(args, attr) != config[key]:
                raise CheckpointError(
                    f"{path}: training args say {attr}={getattr(args, attr)} but the g_ema weights have "
                    f"{key}={config[key]}"
                )
    G = build_generator(config, state, latent_avg, source)
    G.checkpoint_info = {"format": "torch", "path": str(path)}
    return G


# ==================================================================================================== NVIDIA pickles
@dataclass
class PersistentObject:
    """What NVIDIA's ``torch_utils.persistence`` pickled for one network object, kept as data.

    ``module_src`` is the source NVIDIA's loader would execute; here it is only ever read as text.
    """

    class_name: str
    state: dict
    version: Any = None
    module_src: str = ""

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.state.get("_parameters") or {}

    @property
    def buffers(self) -> Mapping[str, Any]:
        return self.state.get("_buffers") or {}

    @property
    def modules(self) -> Mapping[str, Any]:
        return self.state.get("_modules") or {}

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute of the pickled object, else its constructor keyword argument, else ``default``."""
        if name in self.state:
            return self.state[name]
        kwargs = self.state.get("_init_kwargs") or {}
        return kwargs.get(name, default) if isinstance(kwargs, Mapping) else default


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps the data, runs nothing."""
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise CheckpointError(f"persistent object with unexpected metadata type {type(meta).__name__}")
    state = meta.get("state")
    class_name = meta.get("class_name")
    if not isinstance(class_name, str) or not isinstance(state, Mapping):
        raise CheckpointError("persistent object without a class name or state")
    src = meta.get("module_src")
    return PersistentObject(class_name, dict(state), meta.get("version"), src if isinstance(src, str) else "")


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access); instances have a __dict__ for BUILD."""


_STORAGE_ITEMSIZE = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
}  # fmt: skip


class _StorageScan(pickle.Unpickler):
    """Reads a legacy torch.save stream's storage declarations (type, numel) without creating anything."""

    def __init__(self, f: io.BytesIO) -> None:
        super().__init__(f)
        self.declared: list[tuple[str, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.cuda") and name in _STORAGE_ITEMSIZE:
            return name
        raise UnsafeCheckpointError(f"tensor data references {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int)):
            raise CheckpointError(f"unexpected persistent id in tensor data: {pid!r:.100}")
        self.declared.append((pid[1], pid[4]))
        return None


class _StorageLoader:
    """Loads the tensor storages embedded in a plain pickle (``torch.storage._load_from_bytes``) safely."""

    def __init__(self) -> None:
        self.total_bytes = 0

    def __call__(self, data: Any) -> Any:
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError("tensor storage data is not bytes")
        f = io.BytesIO(data)
        scan = _StorageScan(f)
        for _ in range(4):  # magic number, protocol version, system info, then the storage object itself
            scan.load()
        declared = sum(_STORAGE_ITEMSIZE.get(t, 8) * max(n, 0) for t, n in scan.declared)
        if declared > len(data):
            raise CheckpointError(f"a tensor storage declares {declared} bytes but holds only {len(data)}")
        self.total_bytes += declared
        if self.total_bytes > MAX_PICKLE_STORAGE_BYTES:
            raise CheckpointLimitError(f"tensor data exceeds {MAX_PICKLE_STORAGE_BYTES >> 30} GiB")
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointError(f"tensor storage data decoded to {type(storage).__name__}")
        return storage


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, *_ignored: Any) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` without hooks or metadata, with the view checked against the storage."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"tensor built on {type(storage).__name__}, not a storage")
    size, stride = tuple(size), tuple(stride)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (storage_offset, *size, *stride))
    if not ints or len(size) != len(stride) or storage_offset < 0 or min((*size, *stride), default=0) < 0:
        raise CheckpointError(f"invalid tensor view: offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    untyped = storage._untyped_storage
    t = torch.empty((0,), dtype=storage.dtype)
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        numel = untyped.nbytes() // t.element_size()
        if last >= numel:
            raise CheckpointError(f"tensor view {size} reaches element {last} of a {numel}-element storage")
    return t.set_(untyped, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Tensor:
    if not isinstance(data, Tensor):
        raise CheckpointError("parameter without tensor data")
    return data


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("numpy scalar of object dtype (would hold arbitrary Python objects)")
    if len(data) != dtype.itemsize:
        raise CheckpointError("numpy scalar with the wrong number of bytes")
    return np.frombuffer(data, dtype=dtype)[0].item()


class NumpyArray:
    """A numpy array in the pickle (StyleGAN3 layers hold some), rebuilt from raw bytes; object arrays are refused."""

    def __init__(self, cls: Any = None, *_ignored: Any) -> None:
        if cls is not np.ndarray:
            raise UnsafeCheckpointError(f"numpy array reconstruction of {cls!r}")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointError("malformed numpy array state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, bytearray)):
            raise UnsafeCheckpointError("numpy array of object dtype (would hold arbitrary Python objects)")
        shape = tuple(int(n) for n in shape)
        if math.prod(shape) * dtype.itemsize != len(raw):
            raise CheckpointError(f"numpy array of shape {shape} with {len(raw)} bytes of data")
        self.array = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals below; everything else (os.system, eval, ...) is refused before it is called."""

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        storage = _StorageLoader()
        self.allowed: dict[tuple[str, str], Any] = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): storage,
            ("collections", "OrderedDict"): OrderedDict,
            ("dnnlib.util", "EasyDict"): _EasyDict,
            ("dnnlib", "EasyDict"): _EasyDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy.core.multiarray", "_reconstruct"): NumpyArray,
            ("numpy._core.multiarray", "_reconstruct"): NumpyArray,
            ("numpy", "ndarray"): np.ndarray,
        }

    def find_class(self, module: str, name: str) -> Any:
        hit = self.allowed.get((module, name))
        if hit is not None:
            return hit
        if module.startswith("dnnlib.tflib"):
            raise UnsupportedCheckpointError(
                "this is a TensorFlow StyleGAN/StyleGAN2 pickle (dnnlib.tflib); only the PyTorch pickles of "
                "stylegan2-ada-pytorch / stylegan3 and rosinality .pt files load. Nothing was loaded"
            )
        raise UnsafeCheckpointError(
            f"refused: the pickle calls {module}.{name}, which is not a tensor or plain-data constructor, so "
            f"unpickling it could run code. Nothing was loaded or executed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("the pickle uses persistent ids, which network pickles do not")


class _CappedReader:
    """File wrapper whose reads never ask for more than what is left, so a forged length cannot allocate GBs."""

    def __init__(self, f: Any, size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._f.readline(self._left if limit is None or limit < 0 else min(limit, self._left))
        self._left -= len(data)
        return data


def read_network_pickle(path: str | os.PathLike) -> Any:
    """Unpickle an NVIDIA network pickle as data: networks become ``PersistentObject``, tensors stay tensors."""
    path = _resolve(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(_CappedReader(f, path.stat().st_size)).load()
    except CheckpointError as e:
        raise type(e)(f"{path}: {e}") from None
    except Exception as e:  # truncated or corrupt pickles raise many types
        raise CheckpointError(f"{path}: not a readable network pickle ({type(e).__name__}: {e})") from e


def _tensor(obj: PersistentObject, kind: str, name: str, where: str) -> Tensor:
    table = obj.parameters if kind == "param" else obj.buffers
    t = table.get(name)
    if not isinstance(t, Tensor):
        raise CheckpointError(f"{where}.{name} is missing")
    return t.detach().to(torch.float32)


def _submodule(obj: PersistentObject, name: str, where: str, class_name: str | None = None) -> PersistentObject:
    m = obj.modules.get(name)
    if not isinstance(m, PersistentObject):
        raise CheckpointError(f"{where}.{name} is missing")
    if class_name and m.class_name != class_name:
        raise UnsupportedCheckpointError(f"{where}.{name} is a {m.class_name}, expected {class_name}")
    return m


def _is_stylegan3(G: PersistentObject) -> bool:
    syn = G.modules.get("synthesis")
    if isinstance(syn, PersistentObject):
        names = set(syn.modules)
        if "input" in names and "b4" not in names:
            return True
        first = syn.modules.get("input")
        if isinstance(first, PersistentObject) and first.class_name == "SynthesisInput":
            return True
    return "class SynthesisInput" in G.module_src


def _affine(layer: PersistentObject, where: str, w_dim: int, cin: int) -> tuple[Tensor, Tensor]:
    aff = _submodule(layer, "affine", where, "FullyConnectedLayer")
    weight, bias = _tensor(aff, "param", "weight", f"{where}.affine"), _tensor(aff, "param", "bias", f"{where}.affine")
    if tuple(weight.shape) != (cin, w_dim) or tuple(bias.shape) != (cin,):
        raise CheckpointError(f"{where}.affine has shape {tuple(weight.shape)}, expected ({cin}, {w_dim})")
    gain = aff.attr("bias_gain", 1)
    lr = aff.attr("lr_multiplier", 1)
    if not math.isclose(float(gain), 1.0) or not math.isclose(float(lr), 1.0):
        raise UnsupportedCheckpointError(f"{where}.affine uses a learning-rate multiplier {gain}; expected 1")
    return weight, bias


def _clamp_of(layer: PersistentObject, block: PersistentObject, synthesis_kwargs: Mapping) -> float | None:
    if "conv_clamp" in layer.state:
        v = layer.state["conv_clamp"]
    elif "conv_clamp" in (block.state.get("_init_kwargs") or {}):
        v = block.state["_init_kwargs"]["conv_clamp"]
    else:
        v = synthesis_kwargs.get("conv_clamp")
    return None if v is None else float(v)


def nvidia_to_port(G: PersistentObject, source: str = "pickle") -> tuple[dict, dict[str, Tensor], Tensor | None, dict]:
    """Rename an NVIDIA StyleGAN2 ``Generator`` (as data) onto the port's state dict.

    Returns ``(config, state_dict, latent_avg or None, notes)``. Exactness: mapping (2nd-moment normalisation, lr
    multiplier), affines (bias init 1, gain 1), modulated conv demodulation, transposed-conv upsampling + [1,3,3,1]
    filter, torgb weight gain without demodulation, ``noise_const * noise_strength``, bias + lrelu * sqrt(2) and
    ``conv_clamp`` all have the same math in ``network.Generator``; per-layer fp16 (``num_fp16_res``) runs in fp32.
    """
    if G.class_name != "Generator":
        raise UnsupportedCheckpointError(f"{source}: G_ema is a {G.class_name}, expected a Generator")
    if _is_stylegan3(G):
        raise UnsupportedCheckpointError(
            f"{source}: this is a StyleGAN3 (alias-free, configs T/R) generator; only StyleGAN2-architecture "
            f"pickles load (stylegan2-ada-pytorch, or stylegan3's --cfg=stylegan2). Nothing was loaded"
        )
    c_dim = int(G.attr("c_dim", 0) or 0)
    if c_dim > 0:
        raise UnsupportedCheckpointError(
            f"{source}: a conditional generator (c_dim={c_dim}, class labels); only unconditional ones load"
        )
    img_channels = int(G.attr("img_channels", 3))
    if img_channels != 3:
        raise UnsupportedCheckpointError(f"{source}: img_channels={img_channels}; only RGB generators load")
    init_kwargs = G.state.get("_init_kwargs") or {}
    # stylegan2-ada-pytorch passes synthesis_kwargs={...}; stylegan3's StyleGAN2 Generator takes them as **kwargs.
    synthesis_kwargs = dict(init_kwargs.get("synthesis_kwargs") or {}) or dict(init_kwargs)

    mapping = _submodule(G, "mapping", "G_ema", "MappingNetwork")
    syn = _submodule(G, "synthesis", "G_ema", "SynthesisNetwork")
    if "embed" in mapping.modules:
        raise UnsupportedCheckpointError(f"{source}: the mapping network embeds class labels (conditional)")
    fcs = []
    while f"fc{len(fcs)}" in mapping.modules:
        fcs.append(_submodule(mapping, f"fc{len(fcs)}", "G_ema.mapping", "FullyConnectedLayer"))
    if not fcs:
        raise CheckpointError(f"{source}: G_ema.mapping has no fc0 layer")
    w_dim = int(_tensor(fcs[-1], "param", "weight", "G_ema.mapping.fc").shape[0])
    state: dict[str, Tensor] = {}
    lrs = set()
    for i, fc in enumerate(fcs):
        where = f"G_ema.mapping.fc{i}"
        weight, bias = _tensor(fc, "param", "weight", where), _tensor(fc, "param", "bias", where)
        if tuple(weight.shape) != (w_dim, w_dim):
            raise UnsupportedCheckpointError(
                f"{source}: {where} maps {weight.shape[1]} -> {weight.shape[0]} features; only z_dim = w_dim = "
                f"layer_features ({w_dim}) loads"
            )
        if fc.attr("activation", "lrelu") != "lrelu":
            raise UnsupportedCheckpointError(f"{source}: {where} uses activation {fc.attr('activation')!r}")
        lrs.add(float(fc.attr("bias_gain", fc.attr("lr_multiplier", mapping.attr("lr_multiplier", 0.01)))))
        state[f"style.{i + 1}.weight"] = weight
        state[f"style.{i + 1}.bias"] = bias
    if len(lrs) != 1:
        raise CheckpointError(f"{source}: mapping layers use different learning-rate multipliers {sorted(lrs)}")
    lr_mlp = lrs.pop()
    w_avg = mapping.buffers.get("w_avg")
    latent_avg = w_avg.detach().float() if isinstance(w_avg, Tensor) else None

    size = int(syn.attr("img_resolution", G.attr("img_resolution", 0)))
    if size < 4 or size > MAX_SIZE or size & (size - 1):
        raise CheckpointLimitError(f"{source}: img_resolution {size} refused (power of 2 within 4..{MAX_SIZE})")
    channels: dict[int, int] = {}
    clamps: set[float | None] = set()
    fp16 = []
    noise_idx = 0
    for bi, res in enumerate(resolutions(size)):
        where = f"G_ema.synthesis.b{res}"
        block = _submodule(syn, f"b{res}", "G_ema.synthesis", "SynthesisBlock")
        arch = block.attr("architecture", synthesis_kwargs.get("architecture", "skip"))
        if arch != "skip":
            raise UnsupportedCheckpointError(
                f"{source}: synthesis architecture {arch!r}; only 'skip' (every published StyleGAN2 config) loads"
            )
        if block.attr("use_fp16", False):
            fp16.append(res)
        if res == 4:
            const = _tensor(block, "param", "const", where)
            state["input.input"] = const.unsqueeze(0)
            channels[4] = int(const.shape[0])
        names = ["conv1"] if res == 4 else ["conv0", "conv1"]
        for name in names:
            lw = f"{where}.{name}"
            layer = _submodule(block, name, where, "SynthesisLayer")
            weight = _tensor(layer, "param", "weight", lw)
            cout, cin, kh, kw = weight.shape
            if (kh, kw) != (3, 3):
                raise UnsupportedCheckpointError(f"{source}: {lw} has a {kh}x{kw} kernel; StyleGAN2 uses 3x3")
            if layer.attr("activation", "lrelu") != "lrelu":
                raise UnsupportedCheckpointError(f"{source}: {lw} uses activation {layer.attr('activation')!r}")
            up = int(layer.attr("up", 2 if name == "conv0" else 1))
            if up != (2 if name == "conv0" else 1):
                raise UnsupportedCheckpointError(f"{source}: {lw} has up={up}")
            port = "conv1" if res == 4 else f"convs.{2 * (bi - 1) + (name == 'conv1')}"
            aw, ab = _affine(layer, lw, w_dim, cin)
            state[f"{port}.conv.weight"] = weight.unsqueeze(0)
            state[f"{port}.conv.modulation.weight"] = aw
            state[f"{port}.conv.modulation.bias"] = ab
            state[f"{port}.activate.bias"] = _tensor(layer, "param", "bias", lw)
            if name == "conv0":
                filt = _tensor(layer, "buffer", "resample_filter", lw)
                if filt.ndim != 2:
                    raise UnsupportedCheckpointError(f"{source}: {lw}.resample_filter is not a 2-D filter")
                state[f"{port}.conv.blur.kernel"] = filt * 4  # upfirdn2d gain up**2
            if layer.attr("use_noise", True) and "noise_strength" in layer.parameters:
                state[f"{port}.noise.weight"] = _tensor(layer, "param", "noise_strength", lw).reshape(1)
                state[f"noises.noise_{noise_idx}"] = _tensor(layer, "buffer", "noise_const", lw)[None, None]
            else:  # use_noise=False: no noise input at all
                state[f"{port}.noise.weight"] = torch.zeros(1)
                state[f"noises.noise_{noise_idx}"] = torch.zeros(1, 1, res, res)
            noise_idx += 1
            clamps.add(_clamp_of(layer, block, synthesis_kwargs))
            channels[res] = int(cout)
        rgb = _submodule(block, "torgb", where, "ToRGBLayer")
        rw = f"{where}.torgb"
        weight = _tensor(rgb, "param", "weight", rw)
        if tuple(weight.shape[2:]) != (1, 1) or weight.shape[0] != 3:
            raise UnsupportedCheckpointError(f"{source}: {rw}.weight has shape {tuple(weight.shape)}")
        port = "to_rgb1" if res == 4 else f"to_rgbs.{bi - 1}"
        aw, ab = _affine(rgb, rw, w_dim, int(weight.shape[1]))
        state[f"{port}.conv.weight"] = weight.unsqueeze(0)
        state[f"{port}.conv.modulation.weight"] = aw
        state[f"{port}.conv.modulation.bias"] = ab
        state[f"{port}.bias"] = _tensor(rgb, "param", "bias", rw).reshape(1, 3, 1, 1)
        clamps.add(_clamp_of(rgb, block, synthesis_kwargs))
        if res > 4:
            filt = _tensor(block, "buffer", "resample_filter", where)
            if filt.ndim != 2:
                raise UnsupportedCheckpointError(f"{source}: {where}.resample_filter is not a 2-D filter")
            state[f"{port}.upsample.kernel"] = filt * 4  # upsample2d gain up**2
    if len(clamps) != 1:
        raise UnsupportedCheckpointError(f"{source}: layers use different conv_clamp values {sorted(map(str, clamps))}")
    config = {
        "size": size,
        "style_dim": w_dim,
        "n_mlp": len(fcs),
        "channel_multiplier": _channel_multiplier_for(size, channels) or 2,
        "blur_kernel": _taps_of(state, source),
        "lr_mlp": lr_mlp,
        "channels": channels,
        "conv_clamp": clamps.pop(),
    }
    notes = {"fp16_resolutions_run_in_fp32": fp16, "architecture": "skip"}
    return config, state, latent_avg, notes


def _taps_of(state: Mapping[str, Tensor], source: str) -> list[float]:
    """The 1-D taps behind the (separable) upsampling filter, for the config; the buffers hold the exact values."""
    kernel = state.get("convs.0.conv.blur.kernel")
    if kernel is None:
        return list(DEFAULT_BLUR)
    filt = kernel / 4
    taps = filt.sum(1)
    if torch.allclose(filt, make_kernel(DEFAULT_BLUR), atol=1e-7):
        return list(DEFAULT_BLUR)
    if not torch.allclose(make_kernel(taps), filt, atol=1e-6):
        raise UnsupportedCheckpointError(f"{source}: the upsampling filter is not separable")
    return taps.tolist()


def load_nvidia_pickle(path: str | os.PathLike) -> Generator:
    """An NVIDIA stylegan2-ada-pytorch / stylegan3 (StyleGAN2 config) network pickle -> ``Generator`` (G_ema)."""
    path = _resolve(path)
    data = read_network_pickle(path)
    if isinstance(data, Mapping):
        G = data.get("G_ema", data.get("G"))
    else:
        G = data
    if not isinstance(G, PersistentObject):
        keys = sorted(map(str, data))[:12] if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{path}: no 'G_ema' network in this pickle (found {keys})")
    try:
        config, state, latent_avg, notes = nvidia_to_port(G, str(path))
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from None
    gen = build_generator(config, state, latent_avg, str(path))
    gen.checkpoint_info = {"format": "pickle", "path": str(path), **notes}
    return gen


# ==================================================================================================== safetensors
def _metadata_config(config: Mapping[str, Any]) -> str:
    cfg = dict(config)
    cfg["channels"] = {str(k): int(v) for k, v in cfg["channels"].items()}
    return json.dumps(cfg, sort_keys=True)


def save_generator(path: str | os.PathLike, G: Generator, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``G`` (state dict + ``latent_avg``) as safetensors with its config in the metadata, atomically.

    ``metadata`` values that are not strings are stored as JSON. Returns the path written.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    tensors["latent_avg"] = G.latent_avg.detach().to("cpu", torch.float32).contiguous().clone()
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, format_version=str(FORMAT_VERSION), config=_metadata_config(G.config))
    if getattr(G, "latent_avg_estimated", False):
        meta["latent_avg_estimated"] = "true"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (no tensor is read)."""
    from safetensors import safe_open

    path = _resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e


def load_generator(path: str | os.PathLike) -> Generator:
    """A safetensors generator: the project's format, or a bare port-style state dict (architecture from shapes).

    The config is checked against the limits and every tensor's shape against it before any tensor is read.
    """
    from safetensors import safe_open

    path = _resolve(path)
    source = str(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if "config" in meta:
                if meta.get("format") != FORMAT:
                    raise CheckpointError(f"{path}: metadata format {meta.get('format')!r}, expected {FORMAT!r}")
                try:
                    version = int(meta.get("format_version", "0"))
                except ValueError:
                    version = -1
                if not 1 <= version <= FORMAT_VERSION:
                    raise CheckpointError(
                        f"{path}: format_version {meta.get('format_version')!r} is not supported (this code reads "
                        f"1..{FORMAT_VERSION})"
                    )
                try:
                    config = json.loads(meta["config"])
                except json.JSONDecodeError as e:
                    raise CheckpointError(f"{path}: the config metadata is not JSON ({e})") from e
            else:
                config = infer_port_config({k: s for k, s in shapes.items() if k != "latent_avg"}, source)
            cfg = check_config(config, source)
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in Generator(**cfg).state_dict().items()}
            report = _shape_report(expected, {k: s for k, s in shapes.items() if k != "latent_avg"})
            if report:
                raise CheckpointError(f"{path}: does not match a StyleGAN2 generator of {_describe(cfg)}: {report}")
            if "latent_avg" in shapes and math.prod(shapes["latent_avg"]) != cfg["style_dim"]:
                raise CheckpointError(
                    f"{path}: latent_avg has shape {shapes['latent_avg']}, expected {cfg['style_dim']} values"
                )
            state = {k: f.get_tensor(k) for k in expected}
            latent_avg = f.get_tensor("latent_avg") if "latent_avg" in shapes else None
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError and friends on corrupt or truncated files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    G = build_generator(cfg, state, latent_avg, source)
    if meta.get("latent_avg_estimated") == "true":
        G.latent_avg_estimated = True
    G.checkpoint_info = {"format": "safetensors", "path": str(path), "metadata": meta}
    return G


# ==================================================================================================== entry points
def load_stylegan(path: str | os.PathLike, device: str | torch.device | None = None) -> Generator:
    """Any supported StyleGAN2 file -> ``Generator`` (eval, frozen parameters, ``latent_avg`` set).

    The format is read from the file's first bytes, not its name. ``G.checkpoint_info`` records format and path.
    """
    fmt = detect_format(path)
    loader = {"torch": load_port_checkpoint, "pickle": load_nvidia_pickle, "safetensors": load_generator}[fmt]
    G = loader(path)
    return G.to(device) if device is not None else G


sha256 = file_sha256


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``src`` (port .pt, NVIDIA .pkl or safetensors) as the project's safetensors at ``dst``.

    The metadata records the source file name, format and sha256.
    """
    src = _resolve(src)
    G = load_stylegan(src)
    info = getattr(G, "checkpoint_info", {})
    meta = {
        "source_file": src.name,
        "source_format": info.get("format", ""),
        "source_sha256": sha256(src),
    }
    if info.get("fp16_resolutions_run_in_fp32"):
        meta["fp16_resolutions_run_in_fp32"] = info["fp16_resolutions_run_in_fp32"]
    return save_generator(dst, G, meta)
