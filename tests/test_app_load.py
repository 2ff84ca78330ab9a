"""A bounded load test of the app on 127.0.0.1 (bench/app_load.py): 5 clients, 20 mixed small jobs, 2 at a time.

Slow (about 40 s on 2 cores, with the server's start), so it runs only with ``CLIPKIT_LOAD_TEST=1``, which
``.ci/run`` sets:

    CLIPKIT_LOAD_TEST=1 .venv/bin/python -m pytest -q tests/test_app_load.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("CLIPKIT_LOAD_TEST") != "1",
                                reason="load test: set CLIPKIT_LOAD_TEST=1 to run it")


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "app_load.py"
    spec = importlib.util.spec_from_file_location("app_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("app_load", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_five_clients_twenty_jobs_all_complete_unmixed_in_bounded_memory():
    pytest.importorskip("gradio_client")
    report = _bench().main(["--clients", "5", "--jobs", "20", "--concurrency", "2", "--max-rss-gb", "6"])
    assert report["errors"] == [] and report["completed"] == 20
    assert report["mismatched"] == []  # every output equals the same job run alone through the API
    assert report["clients_served"] == 5
    assert report["max_rss_mb"] <= 6 * 1024 and report["ok"]
