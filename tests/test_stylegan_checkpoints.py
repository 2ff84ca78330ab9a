"""StyleGAN2 checkpoints: port .pt, NVIDIA pickles (restricted unpickler, exact math), safetensors, convert.

The NVIDIA pickles are built here with the structure ``torch_utils.persistence`` produces (each network a call to
``_reconstruct_persistent_obj(meta)`` with ``module_src``, ``class_name`` and the module ``__dict__`` as state), and
the expected images come from an independent re-implementation of NVIDIA's synthesis equations (below), not from
``network.py``.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import json
import math
import os
import pickle
import resource
import subprocess
import sys
import time
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clipkit.guidance.errors import CheckpointError, ClipKitError, WeightsNotFoundError
from clipkit.methods.stylegan import checkpoints as ck
from clipkit.methods.stylegan.network import Generator

TINY = dict(size=16, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8})


def tiny_generator(seed: int = 0) -> Generator:
    G = Generator(**TINY, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("activate.bias") or "to_rgb" in name and name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        G.set_latent_avg(torch.randn(32, generator=g) * 0.1)
    return G


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(2, 32, generator=torch.Generator().manual_seed(11))


def image(G: Generator, z: torch.Tensor, **kw) -> torch.Tensor:
    with torch.no_grad():
        return G(z, **kw)


# ==================================================================================================== port format
def test_port_converted_checkpoint_round_trip(tmp_path, z):
    G = tiny_generator()
    path = tmp_path / "ffhq-tiny.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg.clone()}, path)
    assert ck.detect_format(path) == "torch"
    H = ck.load_stylegan(path)
    assert H.config == G.config
    assert torch.equal(H.latent_avg, G.latent_avg) and not H.latent_avg_estimated
    assert torch.equal(image(H, z), image(G, z))
    assert torch.equal(image(H, z, truncation=0.5), image(G, z, truncation=0.5))
    assert not any(p.requires_grad for p in H.parameters())
    assert H.checkpoint_info["format"] == "torch"
    # Pre-1.6 torch.save (non-zip) files and bare state dicts load too.
    legacy = tmp_path / "legacy.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg}, legacy, _use_new_zipfile_serialization=False)
    assert ck.detect_format(legacy) == "torch"
    assert torch.equal(image(ck.load_stylegan(legacy), z), image(G, z))
    bare = tmp_path / "bare.pt"
    torch.save({**G.state_dict(), "latent_avg": G.latent_avg}, bare)
    assert torch.equal(ck.load_stylegan(bare).latent_avg, G.latent_avg)


def test_port_training_checkpoint(tmp_path, z):
    G = tiny_generator()
    other = tiny_generator(seed=5)
    args = argparse.Namespace(size=16, latent=32, n_mlp=2, channel_multiplier=2, batch=4)
    ckpt = {
        "g": other.state_dict(),
        "d": {"convs.0.0.weight": torch.randn(8, 3, 1, 1)},
        "g_ema": G.state_dict(),
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0, 1]}]},
        "d_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0]}]},
        "args": args,
    }
    path = tmp_path / "010000.pt"
    torch.save(ckpt, path)
    H = ck.load_stylegan(path)
    assert torch.equal(image(H, z), image(G, z))  # g_ema, not g
    assert H.latent_avg_estimated  # training checkpoints carry no latent_avg: estimated from 4096 z
    G.set_latent_avg(G.mean_latent(4096))
    assert torch.equal(H.latent_avg, G.latent_avg)

    args.latent = 64
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="latent=64"):
        ck.load_stylegan(path)


def test_port_checkpoint_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"g_ema": tiny_generator().state_dict(), "hook": Evil()}, path)
    with pytest.raises(ck.UnsafeCheckpointError, match="weights_only"):
        ck.load_stylegan(path)
    assert not marker.exists()


def test_port_shape_mismatch_names_the_key(tmp_path):
    sd = tiny_generator().state_dict()
    sd["convs.1.activate.bias"] = torch.zeros(15)
    del sd["to_rgbs.0.bias"]
    path = tmp_path / "broken.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CheckpointError) as e:
        ck.load_stylegan(path)
    msg = str(e.value)
    assert str(path) in msg and "to_rgbs.0.bias" in msg and "convs.1.activate.bias (15,)" in msg


# ==================================================================================================== NVIDIA math
# An independent implementation of stylegan2-ada-pytorch's training/networks.py forward pass (skip architecture,
# fp32), written from its equations: used only to produce the expected images.
SQRT2 = math.sqrt(2)


def nv_upfirdn2d(x, f, up=1, padding=(0, 0, 0, 0), gain=1.0):
    """torch_utils/ops/upfirdn2d.py _upfirdn2d_ref: zero-insert, pad [x0, x1, y0, y1], convolve with f * gain."""
    b, c, h, w = x.shape
    u = x.new_zeros(b, c, h * up, w * up)
    u[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = padding
    u = F.pad(u, [px0, px1, py0, py1])
    f = (f * gain ** (f.ndim / 2)).flip([0, 1])
    return F.conv2d(u, f[None, None].repeat(c, 1, 1, 1), groups=c)


def nv_modulated_conv2d(x, weight, styles, up=1, padding=0, resample_filter=None, demodulate=True):
    """networks.py modulated_conv2d, one sample at a time; up=2 through conv2d_resample's reference definition
    (upfirdn2d with up=2, padding + filter/up offsets, gain up**2, then a true convolution: flip_weight=False)."""
    out = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt().reshape(-1, 1, 1, 1)
        xi = x[i : i + 1]
        if up == 1:
            out.append(F.conv2d(xi, w, padding=padding))
        else:
            fw = resample_filter.shape[-1]
            p0, p1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
            xi = nv_upfirdn2d(xi, resample_filter, up=up, padding=(p0, p1, p0, p1), gain=up**2)
            out.append(F.conv2d(xi, w.flip([2, 3])))
    return torch.cat(out)


def nv_bias_act(x, b, act="linear", gain=1.0, clamp=None):
    x = x + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def nv_fc(p, x, lr=1.0, act="linear"):
    w = p["weight"] * (lr / np.sqrt(p["weight"].shape[1]))
    return nv_bias_act(x @ w.t(), p["bias"] * lr, act=act, gain=SQRT2 if act == "lrelu" else 1.0)


def nv_generator(P, z, psi=1.0, cutoff=None, clamp=None, noise_mode="const"):
    """Generator.forward(z, c=None, truncation_psi, truncation_cutoff, noise_mode) of networks.py."""
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # normalize_2nd_moment
    for i in range(P["num_mapping"]):
        x = nv_fc(P[f"mapping.fc{i}"], x, lr=0.01, act="lrelu")
    ws = x.unsqueeze(1).repeat(1, P["num_ws"], 1)
    if psi != 1:
        avg = P["mapping.w_avg"]
        if cutoff is None:
            ws = avg.lerp(ws, psi)
        else:
            ws[:, :cutoff] = avg.lerp(ws[:, :cutoff], psi)
    x = img = None
    w_idx = 0
    f = P["filter"]
    for res in P["resolutions"]:
        n_conv = 1 if res == 4 else 2
        block_ws = ws.narrow(1, w_idx, n_conv + 1)
        w_idx += n_conv
        if res == 4:
            x = P["b4.const"].unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        names = ["conv1"] if res == 4 else ["conv0", "conv1"]
        for k, name in enumerate(names):
            L = P[f"b{res}.{name}"]
            styles = nv_fc(L["affine"], block_ws[:, k])
            up = 2 if name == "conv0" else 1
            x = nv_modulated_conv2d(x, L["weight"], styles, up=up, padding=1, resample_filter=f)
            if noise_mode == "const":
                x = x + L["noise_const"] * L["noise_strength"]
            x = nv_bias_act(x, L["bias"], act="lrelu", gain=SQRT2, clamp=clamp)
        if img is not None:
            img = nv_upfirdn2d(img, f, up=2, padding=(2, 1, 2, 1), gain=4)  # upfirdn2d.upsample2d
        T = P[f"b{res}.torgb"]
        styles = nv_fc(T["affine"], block_ws[:, -1]) * (1 / np.sqrt(T["weight"].shape[1]))
        y = nv_modulated_conv2d(x, T["weight"], styles, demodulate=False)
        y = nv_bias_act(y, T["bias"], clamp=clamp)
        img = y if img is None else img + y
    return img


def nv_params(seed=0, channels=None, z_dim=32, num_mapping=2, size=16):
    """Random parameters in NVIDIA's layout (shapes and initial scales of networks.py)."""
    g = torch.Generator().manual_seed(seed)
    ch = channels or {4: 16, 8: 16, 16: 8}

    def randn(*shape, scale=1.0, shift=0.0):
        return torch.randn(shape, generator=g) * scale + shift

    P = {"num_mapping": num_mapping, "resolutions": [2**i for i in range(2, int(math.log2(size)) + 1)]}
    P["num_ws"] = 2 * len(P["resolutions"])
    P["filter"] = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64  # setup_filter([1,3,3,1])
    for i in range(num_mapping):
        P[f"mapping.fc{i}"] = {"weight": randn(z_dim, z_dim, scale=100.0), "bias": randn(z_dim, scale=10.0)}
    P["mapping.w_avg"] = randn(z_dim, scale=0.3)
    for res in P["resolutions"]:
        if res == 4:
            P["b4.const"] = randn(ch[4], 4, 4)
        names = ["conv1"] if res == 4 else ["conv0", "conv1"]
        for name in names:
            cin = ch[4] if res == 4 else (ch[res // 2] if name == "conv0" else ch[res])
            P[f"b{res}.{name}"] = {
                "weight": randn(ch[res], cin, 3, 3),
                "affine": {"weight": randn(cin, z_dim), "bias": randn(cin, scale=0.2, shift=1.0)},
                "noise_const": randn(res, res),
                "noise_strength": randn(scale=0.3),
                "bias": randn(ch[res], scale=0.2),
            }
        P[f"b{res}.torgb"] = {
            "weight": randn(3, ch[res], 1, 1),
            "affine": {"weight": randn(ch[res], z_dim), "bias": randn(ch[res], scale=0.2, shift=1.0)},
            "bias": randn(3, scale=0.2),
        }
    return P


# ==================================================================================================== fake pickles
class EasyDict(dict):
    """dnnlib.util.EasyDict, as pickled (a dict subclass)."""

    def __getattr__(self, name):
        return self[name]


EasyDict.__module__ = "dnnlib.util"


@pytest.fixture
def nvidia_modules(monkeypatch, tmp_path):
    """Fake ``torch_utils.persistence`` and ``dnnlib.util`` so pickle can reference them by name, as NVIDIA's do.

    Their reconstruct function, if anything ever called it, would execute ``module_src`` as NVIDIA's does.
    """
    marker = tmp_path / "module_src_was_executed"
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(meta["module_src"], {})  # what torch_utils.persistence._src_to_module does
        raise AssertionError("NVIDIA's reconstruct function was called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    dnnlib.util = util
    for name, mod in (("torch_utils", torch_utils), ("torch_utils.persistence", persistence), ("dnnlib", dnnlib),
                      ("dnnlib.util", util)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)
    src = f"open({str(marker)!r}, 'w').write('executed')\nclass SynthesisLayer: pass\n"
    return types.SimpleNamespace(persistence=persistence, marker=marker, src=src)


class Persistent:
    """Pickles like a ``@persistence.persistent_class`` object: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, env, class_name, params=None, buffers=None, modules=None, init_kwargs=None, **attrs):
        self.env, self.class_name = env, class_name
        self.state = {
            "training": False,
            "_parameters": OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in (params or {}).items()),
            "_buffers": OrderedDict((k, v.clone()) for k, v in (buffers or {}).items()),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_modules": OrderedDict(modules or {}),
            "_init_args": (),
            "_init_kwargs": EasyDict(init_kwargs or {}),
            **attrs,
        }

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.env.src, class_name=self.class_name, state=self.state)
        return (self.env.persistence._reconstruct_persistent_obj, (meta,))


def nv_pickle_data(env, P, clamp=None, size=16, w_dim=32, c_dim=0, architecture="skip"):
    """{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'} with G_ema holding ``P`` in NVIDIA's names."""
    f = P["filter"]

    def fc(p, lr=1.0, act="linear", bias_init=0):
        return Persistent(env, "FullyConnectedLayer", params=p, activation=act,
                          weight_gain=np.float64(lr / np.sqrt(p["weight"].shape[1])), bias_gain=lr,
                          init_kwargs=dict(in_features=p["weight"].shape[1], out_features=p["weight"].shape[0],
                                           activation=act, lr_multiplier=lr, bias_init=bias_init))  # fmt: skip

    mapping = Persistent(
        env, "MappingNetwork", buffers={"w_avg": P["mapping.w_avg"]},
        modules={f"fc{i}": fc(P[f"mapping.fc{i}"], lr=0.01, act="lrelu") for i in range(P["num_mapping"])},
        z_dim=w_dim, c_dim=c_dim, w_dim=w_dim, num_ws=P["num_ws"], num_layers=P["num_mapping"], w_avg_beta=0.995,
        init_kwargs=dict(z_dim=w_dim, c_dim=c_dim, w_dim=w_dim, num_ws=P["num_ws"], num_layers=P["num_mapping"]),
    )  # fmt: skip
    blocks = {}
    for res in P["resolutions"]:
        mods = {}
        for name in ["conv1"] if res == 4 else ["conv0", "conv1"]:
            L = P[f"b{res}.{name}"]
            mods[name] = Persistent(
                env, "SynthesisLayer",
                params={"weight": L["weight"], "noise_strength": L["noise_strength"], "bias": L["bias"]},
                buffers={"resample_filter": f, "noise_const": L["noise_const"]},
                modules={"affine": fc(L["affine"], bias_init=1)},
                resolution=res, up=2 if name == "conv0" else 1, use_noise=True, activation="lrelu",
                conv_clamp=clamp, padding=1, act_gain=np.float64(np.sqrt(2)),
            )  # fmt: skip
        T = P[f"b{res}.torgb"]
        mods["torgb"] = Persistent(
            env, "ToRGBLayer", params={"weight": T["weight"], "bias": T["bias"]},
            modules={"affine": fc(T["affine"], bias_init=1)}, conv_clamp=clamp,
            weight_gain=np.float64(1 / np.sqrt(T["weight"].shape[1])),
        )  # fmt: skip
        params = {"const": P["b4.const"]} if res == 4 else {}
        blocks[f"b{res}"] = Persistent(
            env, "SynthesisBlock", params=params, buffers={"resample_filter": f}, modules=mods,
            in_channels=0 if res == 4 else P[f"b{res}.conv0"]["weight"].shape[1], resolution=res, img_channels=3,
            is_last=res == size, architecture=architecture, use_fp16=res >= 16, channels_last=False,
            init_kwargs=dict(architecture=architecture, conv_clamp=clamp),
        )  # fmt: skip
    synthesis = Persistent(env, "SynthesisNetwork", modules=blocks, w_dim=w_dim, img_resolution=size,
                           img_channels=3, num_ws=P["num_ws"])  # fmt: skip
    synthesis_kwargs = EasyDict(channel_base=256, channel_max=16, num_fp16_res=1, conv_clamp=clamp,
                                architecture=architecture)  # fmt: skip
    G_ema = Persistent(
        env, "Generator", modules={"synthesis": synthesis, "mapping": mapping}, z_dim=w_dim, c_dim=c_dim,
        w_dim=w_dim, img_resolution=size, img_channels=3, num_ws=P["num_ws"],
        init_kwargs=dict(z_dim=w_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=size, img_channels=3,
                         mapping_kwargs=EasyDict(num_layers=P["num_mapping"]), synthesis_kwargs=synthesis_kwargs),
    )  # fmt: skip
    G = Persistent(env, "Generator")  # the training copy; loading it instead of G_ema would fail
    D = Persistent(env, "Discriminator", params={"b16.fromrgb.weight": torch.randn(8, 3, 1, 1)})
    augment = Persistent(env, "AugmentPipe", buffers={"p": torch.tensor(0.2)}, xflip=1.0, imgfilter_bands=[1, 1, 1, 1])
    return {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment,
            "training_set_kwargs": EasyDict(path="~/datasets/ffhq.zip", resolution=size, use_labels=False)}  # fmt: skip


def write_pickle(path, data):
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


@pytest.mark.parametrize("clamp", [None, 0.6])
def test_nvidia_pickle_matches_reference_math(tmp_path, nvidia_modules, z, clamp):
    P = nv_params(seed=1)
    path = write_pickle(tmp_path / "network-snapshot.pkl", nv_pickle_data(nvidia_modules, P, clamp=clamp))
    assert ck.detect_format(path) == "pickle"
    G = ck.load_stylegan(path)
    assert not nvidia_modules.marker.exists(), "module_src was executed"
    assert G.config["conv_clamp"] == clamp and G.config["lr_mlp"] == 0.01
    assert G.config["channels"] == {4: 16, 8: 16, 16: 8}
    assert torch.equal(G.latent_avg, P["mapping.w_avg"])
    assert G.checkpoint_info["fp16_resolutions_run_in_fp32"] == [16]
    with torch.no_grad():
        for kw in (dict(), dict(psi=0.7), dict(psi=0.5, cutoff=2), dict(noise_mode="none")):
            ref = nv_generator(P, z.clone(), clamp=clamp, **kw)
            ours = G(z, truncation=kw.get("psi", 1.0), truncation_cutoff=kw.get("cutoff"),
                     noise_mode=kw.get("noise_mode", "const"))  # fmt: skip
            assert ref.abs().max() > 0.1
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        if clamp is not None:  # the clamp is really active in this network
            assert (nv_generator(P, z.clone(), clamp=None) - ours).abs().max() > 0.05


def test_nvidia_pickle_storage_payload_with_code_is_refused(tmp_path, nvidia_modules):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class EvilStorage:  # a tensor whose storage bytes are a pickle that runs a command
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (pickle.dumps(Evil(), protocol=2),))

    net = Persistent(nvidia_modules, "Generator", buffers={"x": torch.zeros(1)}, hook=EvilStorage())
    path = write_pickle(tmp_path / "evil.pkl", {"G_ema": net})
    with pytest.raises(ck.UnsafeCheckpointError):
        ck.load_stylegan(path)
    assert not marker.exists() and not nvidia_modules.marker.exists()


@pytest.mark.parametrize(
    "make",
    [
        lambda m: (os.system, (f"touch {m}",)),
        lambda m: (builtins.eval, (f"open({str(m)!r}, 'w')",)),
        lambda m: (builtins.exec, (f"open({str(m)!r}, 'w')",)),
        lambda m: (subprocess.call, (["touch", str(m)],)),
        lambda m: (importlib.import_module, ("antigravity",)),
    ],
    ids=["os.system", "eval", "exec", "subprocess", "import"],
)
def test_pickles_that_run_code_are_refused(tmp_path, nvidia_modules, make):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return make(marker)

    # Top level, and hidden inside a network's state (reached after the persistent objects start loading).
    inner = Persistent(nvidia_modules, "SynthesisLayer", params={"weight": torch.zeros(2)}, payload=Evil())
    for data in ({"G_ema": Evil()}, {"G_ema": Persistent(nvidia_modules, "Generator", modules={"x": inner})}):
        path = write_pickle(tmp_path / "evil.pkl", data)
        with pytest.raises(ck.UnsafeCheckpointError, match="could run code. Nothing was loaded") as e:
            ck.load_stylegan(path)
        assert str(path) in str(e.value)
        assert not marker.exists() and not nvidia_modules.marker.exists()


def test_stylegan3_conditional_and_resnet_pickles_are_refused(tmp_path, nvidia_modules):
    env = nvidia_modules
    # StyleGAN3 layers keep numpy arrays (sizes, cutoffs): they unpickle as data so the refusal can say why.
    sg3_input = Persistent(env, "SynthesisInput", buffers={"freqs": torch.randn(8, 2)}, size=np.array([36, 36]))
    sg3_layer = Persistent(env, "SynthesisLayer", in_cutoff=np.float64(2.0), out_size=np.asarray([36, 36]))
    syn3 = Persistent(env, "SynthesisNetwork", modules={"input": sg3_input, "L0_36_512": sg3_layer})
    sg3 = Persistent(env, "Generator", modules={"synthesis": syn3, "mapping": Persistent(env, "MappingNetwork")})
    path = write_pickle(tmp_path / "stylegan3-t.pkl", {"G_ema": sg3})
    with pytest.raises(ck.UnsupportedCheckpointError, match="StyleGAN3"):
        ck.load_stylegan(path)
    P = nv_params(seed=2)
    path = write_pickle(tmp_path / "cond.pkl", nv_pickle_data(env, P, c_dim=10))
    with pytest.raises(ck.UnsupportedCheckpointError, match="conditional"):
        ck.load_stylegan(path)
    path = write_pickle(tmp_path / "resnet.pkl", nv_pickle_data(env, P, architecture="resnet"))
    with pytest.raises(ck.UnsupportedCheckpointError, match="'resnet'"):
        ck.load_stylegan(path)
    assert not env.marker.exists()


def test_numpy_arrays_unpickle_as_data_but_object_arrays_are_refused(tmp_path):
    path = write_pickle(tmp_path / "arrays.pkl", {"a": np.arange(6, dtype=np.float32).reshape(2, 3).T})
    data = ck.read_network_pickle(path)
    assert isinstance(data["a"], ck.NumpyArray) and np.array_equal(data["a"].array, np.arange(6).reshape(2, 3).T)
    path = write_pickle(tmp_path / "objects.pkl", {"a": np.array([1, "x", None], dtype=object)})
    with pytest.raises(ck.UnsafeCheckpointError, match="object dtype"):
        ck.read_network_pickle(path)


def test_tensorflow_pickles_are_refused(tmp_path):
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(ck.UnsupportedCheckpointError, match="TensorFlow"):
        ck.load_stylegan(path)


# ==================================================================================================== safetensors
def test_safetensors_round_trip_is_bit_identical(tmp_path, z):
    G = tiny_generator()
    path = ck.save_generator(tmp_path / "sub" / "g.safetensors", G, {"note": "test", "steps": 3})
    assert ck.detect_format(path) == "safetensors"
    assert not list(path.parent.glob(".*.tmp"))
    meta = ck.read_safetensors_metadata(path)
    assert meta["format"] == ck.FORMAT and meta["note"] == "test" and meta["steps"] == "3"
    H = ck.load_stylegan(path)
    assert H.config == G.config
    assert list(H.state_dict()) == list(G.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(H.state_dict().values(), G.state_dict().values()))
    assert torch.equal(H.latent_avg, G.latent_avg)
    assert torch.equal(image(H, z), image(G, z))


def test_bare_port_state_dict_as_safetensors(tmp_path, z):
    G = tiny_generator()
    path = tmp_path / "bare.safetensors"
    save_file({**{k: v.contiguous() for k, v in G.state_dict().items()}, "latent_avg": G.latent_avg}, str(path))
    assert torch.equal(image(ck.load_stylegan(path), z), image(G, z))


def _forged(path, config, tensors=None):
    meta = {"format": ck.FORMAT, "format_version": "1", "config": json.dumps(config)}
    save_file(tensors or {"input.input": torch.zeros(1, 16, 4, 4)}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "config, match",
    [
        ({"size": 1_000_000, "style_dim": 32, "n_mlp": 2}, "size 1000000 refused"),
        ({"size": 16, "style_dim": 10**9, "n_mlp": 2}, "style_dim 1000000000 refused"),
        ({"size": 16, "style_dim": 32, "n_mlp": 10**6}, "n_mlp 1000000 refused"),
        ({"size": 16, "style_dim": 32, "n_mlp": 2, "channels": {"16": 10**7}}, "channel counts"),
        ({"size": 2048, "style_dim": 1024, "n_mlp": 16, "channels": {str(r): 2048 for r in (4, 8, 16, 32, 64)}},
         "parameters and buffers"),
    ],
)  # fmt: skip
def test_forged_safetensors_refused_before_allocation(tmp_path, config, match):
    path = _forged(tmp_path / "forged.safetensors", config)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ck.CheckpointLimitError, match=match) as e:
        ck.load_stylegan(path)
    assert str(path) in str(e.value)
    assert time.perf_counter() - t0 < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB: no big allocation


def test_safetensors_wrong_shapes_and_metadata(tmp_path):
    G = tiny_generator()
    tensors = {k: v.contiguous() for k, v in G.state_dict().items()}
    tensors["convs.0.conv.weight"] = torch.zeros(1, 16, 16, 3, 2)
    config = G.config | {"channels": {str(k): v for k, v in G.config["channels"].items()}}
    path = _forged(tmp_path / "shapes.safetensors", config, tensors)
    with pytest.raises(CheckpointError, match=r"convs.0.conv.weight \(1, 16, 16, 3, 2\)"):
        ck.load_stylegan(path)
    with pytest.raises(CheckpointError, match="unknown generator config keys"):
        ck.load_stylegan(_forged(tmp_path / "keys.safetensors", {"size": 16, "style_dim": 32, "n_mlp": 2, "x": 1}))
    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"config": "{}", "format": "x"})
    with pytest.raises(CheckpointError, match="metadata format 'x'"):
        ck.load_stylegan(tmp_path / "other.safetensors")


def test_corrupt_and_unknown_files(tmp_path):
    G = tiny_generator()
    good = ck.save_generator(tmp_path / "good.safetensors", G)
    cases = {
        "empty.pt": b"",
        "text.pkl": b"hello, this is not a checkpoint",
        "random.bin": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "truncated.safetensors": good.read_bytes()[: good.stat().st_size // 2],
        "truncated.pt": b"PK\x03\x04" + b"\x00" * 60,
        "truncated.pkl": pickle.dumps({"G_ema": 1, "x": list(range(100))})[:40],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            ck.load_stylegan(path)
        assert str(path) in str(e.value), name
        assert isinstance(e.value, ClipKitError)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        ck.load_stylegan(tmp_path / "missing.pt")
    not_a_generator = write_pickle(tmp_path / "dict.pkl", {"G_ema": {"a": 1}})
    with pytest.raises(CheckpointError, match="no 'G_ema' network"):
        ck.load_stylegan(not_a_generator)


def test_incomplete_nvidia_pickle_names_file_and_tensor(tmp_path, nvidia_modules):
    data = nv_pickle_data(nvidia_modules, nv_params(seed=4))
    del data["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"].state[
        "_parameters"]["weight"]  # fmt: skip
    path = write_pickle(tmp_path / "incomplete.pkl", data)
    with pytest.raises(CheckpointError, match=r"incomplete.pkl: G_ema.synthesis.b8.conv0.weight is missing"):
        ck.load_stylegan(path)


# ==================================================================================================== convert
def test_convert_from_port_and_pickle(tmp_path, nvidia_modules, z):
    G = tiny_generator()
    pt = tmp_path / "g.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg}, pt)
    out = ck.convert(pt, tmp_path / "from-pt.safetensors")
    meta = ck.read_safetensors_metadata(out)
    assert meta["source_format"] == "torch" and meta["source_sha256"] == ck.sha256(pt)
    assert meta["source_file"] == "g.pt"
    assert torch.equal(image(ck.load_stylegan(out), z), image(G, z))

    P = nv_params(seed=3)
    pkl = write_pickle(tmp_path / "g.pkl", nv_pickle_data(nvidia_modules, P, clamp=256.0))
    direct = ck.load_stylegan(pkl)
    out = ck.convert(pkl, tmp_path / "from-pkl.safetensors")
    meta = ck.read_safetensors_metadata(out)
    assert meta["source_format"] == "pickle" and meta["source_sha256"] == ck.sha256(pkl)
    reloaded = ck.load_stylegan(out)
    assert reloaded.config["conv_clamp"] == 256.0
    assert torch.equal(image(reloaded, z), image(direct, z))
    torch.testing.assert_close(image(reloaded, z), nv_generator(P, z.clone(), clamp=256.0), rtol=1e-5, atol=1e-5)
    assert not nvidia_modules.marker.exists()


def test_estimate_parameters_matches_the_network():
    for cfg in (dict(TINY), dict(size=64, style_dim=64, n_mlp=3, channel_multiplier=1)):
        full = ck.check_config(cfg)
        with torch.device("meta"):
            G = Generator(**full)
        assert ck.estimate_parameters(full) == sum(v.numel() for v in G.state_dict().values())


def test_convert_command_writes_safetensors_that_reload_to_the_same_image(tmp_path, capsys):
    from clipkit.cli import main
    from clipkit.methods.stylegan.checkpoints import load_stylegan
    from clipkit.methods.stylegan.network import Generator

    g = Generator(16, style_dim=32, n_mlp=2, channels={4: 32, 8: 16, 16: 8}, seed=3).eval()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(32)}, tmp_path / "port.pt")
    assert main(["convert", "stylegan", str(tmp_path / "port.pt"), str(tmp_path / "g.safetensors")]) == 0
    assert "16 px" in capsys.readouterr().out
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    a, b = load_stylegan(tmp_path / "port.pt"), load_stylegan(tmp_path / "g.safetensors")
    with torch.no_grad():
        assert torch.equal(a(z=z), b(z=z))
