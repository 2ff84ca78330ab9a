"""Shared fixtures (kept minimal): an isolated user-preset folder and fast tiny-CLIP generate settings."""

from __future__ import annotations

import pytest


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
