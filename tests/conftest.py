"""Shared fixtures (kept minimal): one torch thread, an isolated user-preset folder, fast generate settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Test tensors are small: one thread is faster, and far faster on shared cores (no OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    """Point saved presets at a temporary folder so tests never write into outputs/presets."""
    d = tmp_path / "user-presets"
    monkeypatch.setenv("CLIPKIT_USER_PRESETS", str(d))
    return d


@pytest.fixture
def fast_generate() -> dict:
    """Overrides that make a generate run take ~1 s on CPU with the tiny test CLIP (pass clip="tiny")."""
    return {"steps": 2, "size": 32, "cutouts": 2}
