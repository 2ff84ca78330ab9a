"""The app's first page imports nothing it does not need (issue #28: serving within 5 s; bench/app_start.py times it).

Checked in a fresh interpreter by what is in ``sys.modules``, not by a clock: the API, the registry with every
method's missing-weights check, and the whole Blocks of the app (built, not launched) leave out torchvision.ops
(which pulls in torch._dynamo, ~1.5 s), open_clip and timm, kornia and diffusers; they load with the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_AT_START = ("torchvision.ops", "torch._dynamo", "open_clip", "timm", "kornia", "diffusers")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {NOT_AT_START!r} if m in sys.modules)))"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_api_and_the_app_page_import_no_model_libraries(tmp_path):
    assert _loaded_after("import clipkit.api, clipkit.cli") == []
    build = ("from clipkit.registry import methods\n"
             "[m.missing() for m in methods().values()]\n"
             "from clipkit.ui.app import build_app\n"
             f"build_app(output_dir={str(tmp_path)!r})")
    assert _loaded_after(build) == []


def test_the_lazy_names_of_the_guidance_package_still_resolve():
    import clipkit.guidance as g
    from clipkit.guidance.augment import Cutouts
    from clipkit.guidance.errors import ParameterError

    assert g.Cutouts is Cutouts and g.ParameterError is ParameterError
    assert set(g.__all__) <= set(dir(g))
