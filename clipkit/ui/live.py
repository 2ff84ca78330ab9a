"""Live sliders: moving an edit's strength redraws the tab's last result without pressing Run.

Only cheap apply-steps are live (``Method.live``: a StyleGAN edit's strength, a direction's threshold, an
enhancement's strength): the method runs again with the same inputs, and with the last result's artifacts passed
back in (``Method.live_reuse``: StyleMC's found direction, saved beside the result; backlit enhancement's
illumination map, handed back in memory only and kept in the session's state), so nothing is searched, trained or
computed again. The first live field at 0 is the unedited start, drawn once and cached: the "before" of the
before/after view.

No Gradio here: the app wires it to slider events, and ``bench/stylegan_live.py`` times it the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipkit import api
from clipkit.guidance.artifacts import Artifact
from clipkit.registry import Method

CACHED = 8  # last results whose artifacts stay loaded, and before pictures kept


class LiveRenderer:
    """Redraws results as a live slider moves; one per app (the caches are shared by its sessions)."""

    def __init__(self, clip: Any = None) -> None:
        self.clip = clip  # "tiny" in the app's test mode
        self._artifacts: OrderedDict[str, dict[str, Artifact]] = OrderedDict()
        self._before: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @staticmethod
    def keep(m: Method, result: api.Result) -> dict[str, Artifact]:
        """What a live slider of ``m`` takes back from this run (``Method.live_reuse``): its artifacts, and those
        it hands back in memory only (its ``extras``). The app keeps them in the session's state, so each session
        redraws from its own last run and nothing of one user's run serves another's."""
        found = {**result.run.extras, **result.artifacts}
        return {k: v for k, v in found.items() if k in m.live_reuse and isinstance(v, Artifact)}

    def reused(self, m: Method, last_result: str | Path | None,
               kept: dict[str, Artifact] | None = None) -> dict[str, Artifact]:
        """The last result's artifacts this method takes back in: ``kept`` (``keep``) where given, else those
        saved beside it (loaded once, hash-checked by the API). A method whose reusable part is never saved then
        gets none, and computes it again."""
        if not m.live_reuse or last_result is None:
            return {}
        if kept:
            return {k: v for k, v in kept.items() if k in m.live_reuse}
        key = str(last_result)
        if key not in self._artifacts:
            self._artifacts[key] = api.load_artifacts(key)
            while len(self._artifacts) > CACHED:
                self._artifacts.popitem(last=False)
        self._artifacts.move_to_end(key)
        return {k: v for k, v in self._artifacts[key].items() if k in m.live_reuse}

    def render(self, m: Method, settings: Any, inputs: dict[str, Any] | None = None,
               last_result: str | Path | None = None, kept: dict[str, Artifact] | None = None) -> api.Result:
        """The method at these settings, on these inputs, reusing what the last result learnt or computed."""
        if not m.live:
            raise ValueError(f"method '{m.name}' has no live settings")
        return api.run(m.name, settings, clip=self.clip, **(inputs or {}), **self.reused(m, last_result, kept))

    def before(self, m: Method, settings: Any, inputs: dict[str, Any] | None = None,
               last_result: str | Path | None = None, kept: dict[str, Artifact] | None = None) -> torch.Tensor:
        """The unedited start (the first live field at 0) for these settings and inputs, cached."""
        start = dataclasses.replace(settings, **{m.live[0]: 0})
        given = inputs or {}
        key = (m.name, repr(sorted(dataclasses.asdict(start).items())),
               tuple(sorted((k, _identity(v)) for k, v in given.items())), str(last_result))
        if key not in self._before:
            self._before[key] = self.render(m, start, given, last_result, kept).tensors
            while len(self._before) > CACHED:
                self._before.popitem(last=False)
        self._before.move_to_end(key)
        return self._before[key]


def _identity(value: Any) -> str:
    """What makes an input the same input: a file's path and modification time, a picture's pixels."""
    if isinstance(value, (str, Path)):
        p = Path(value)
        return f"{p}@{p.stat().st_mtime_ns}" if p.exists() else str(p)
    if isinstance(value, Image.Image):
        return f"{value.mode}{value.size}:" + hashlib.sha1(value.tobytes()).hexdigest()
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)}:" + hashlib.sha1(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(value, Artifact):
        return value.sha256()
    return f"{type(value).__name__}@{id(value)}"
