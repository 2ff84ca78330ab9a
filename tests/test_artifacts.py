"""Artifacts: typed results that reload bit for bit, travel beside a result PNG, and feed the next method."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from clipkit import api
from clipkit.guidance.artifacts import Artifact
from clipkit.guidance.errors import CheckpointError, ParameterError
from clipkit.guidance.images import read_settings

SMALL = {"steps": 2, "size": 48, "crop_size": 16, "num_crops": 4, "seed": 4}


def photo(seed: int, size: int = 48) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_artifact_round_trips_bit_for_bit_and_checks_its_kind(tmp_path):
    a = Artifact("latent/wplus", {"w": torch.randn(1, 10, 8), "avg": torch.arange(8.0)}, {"generator": "g"})
    path = a.save(tmp_path / "w.safetensors")
    b = Artifact.load(path, "latent/")
    assert b.kind == a.kind and b.meta == a.meta and b.sha256() == a.sha256()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    changed = Artifact(a.kind, {**a.tensors, "avg": a.tensors["avg"] + 1e-6}, a.meta)
    assert changed.sha256() != a.sha256()
    with pytest.raises(CheckpointError, match="'latent/wplus' artifact, expected 'network/"):
        Artifact.load(path, "network/")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a clipkit artifact"):
        Artifact.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        Artifact.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        Artifact.load(tmp_path / "missing.safetensors")


def test_a_trained_style_network_saves_beside_its_png_and_feeds_the_next_run(tmp_path):
    trained = api.run("clipstyler", clip="tiny", image=photo(1), prompt="fire", **SMALL)
    assert set(trained.artifacts) == {"network"} and trained.artifacts["network"].kind == "network/clipstyler-unet"
    png = trained.save(tmp_path / "styled.png")
    record = read_settings(png)["artifacts"]["network"]
    assert record["file"] == "styled.network.safetensors" and (tmp_path / record["file"]).is_file()
    loaded = api.load_artifacts(png)["network"]
    assert loaded.sha256() == trained.artifacts["network"].sha256() == record["sha256"]

    other = photo(2, 64)
    applied = api.run("clipstyler", clip="tiny", image=other, network=trained, size=64)
    from_file = api.run("clipstyler", clip="tiny", image=other, network=tmp_path / record["file"], size=64)
    with torch.no_grad():
        direct = trained.run.extras["network"](other).clamp(0, 1)
    assert torch.equal(applied.tensors, direct) and torch.equal(from_file.tensors, direct)
    assert applied.history == [] and applied.record["settings"]["mode"] == "apply"
    assert api.load_preset(applied.save(tmp_path / "applied.png")).settings["size"] == 64  # still a preset

    net_file = tmp_path / record["file"]
    tampered = Artifact.load(net_file)
    first = next(iter(tampered.tensors))
    tampered.tensors[first] = tampered.tensors[first] + 1
    tampered.save(net_file)
    with pytest.raises(ParameterError, match="changed since styled.png was saved"):
        api.load_artifacts(png)


def test_a_result_without_the_wanted_artifact_is_refused_by_name():
    plain = api.run("generate", clip="tiny", prompt="a red circle", steps=1, size=32, cutouts=2)
    with pytest.raises(ParameterError, match="holds 0 artifacts of kind 'network/clipstyler-unet'"):
        api.run("clipstyler", clip="tiny", image=photo(3), network=plain, **SMALL)


def test_poda_returns_its_statistics_as_an_artifact(tmp_path):
    r = api.run("poda", clip="tiny", image=photo(5, 64), prompt="driving at night", steps=3, preview_steps=0,
                size=64)
    stats = r.artifacts["statistics"]
    assert stats.kind == "statistics/pin" and stats.meta["prompt"] == "driving at night"
    assert torch.equal(stats.tensors["mu"], r.run.extras["pin"].mu)
    assert Artifact.load(stats.save(tmp_path / "pin.safetensors")).sha256() == stats.sha256()


def test_a_picked_picture_of_a_batch_carries_only_its_own_latent(tmp_path):
    """Saving image 2 of 3 saves that image's latent alone (checked by its hash on reload); an edit at strength 0
    from it redraws exactly that picture."""
    batch = api.run("stylegan", count=3, seed=11)
    path = batch.save(tmp_path / "two.png", index=1)
    latent = api.load_artifacts(path)["latent"]
    assert latent.tensors["wplus"].shape[0] == 1 and latent.meta["seeds"] == [12]
    assert torch.equal(latent.tensors["wplus"], batch.artifacts["latent"].tensors["wplus"][1:2])
    again = api.run("stylemc", clip="tiny", latent=path.with_name("two.latent.safetensors"), find_seeds=2,
                    batch=2, change_power=0.0)
    assert torch.equal(again.tensors, batch.tensors[1:2])
