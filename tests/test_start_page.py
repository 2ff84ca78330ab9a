"""The start page answers on the app's address while gradio and torch load, and hands the address to the app.

The whole command is exercised too: `clipkit serve` answers with the start page before it has imported gradio or
torch, reports its stages in order, and the app then answers on the same address (the browser test also opens the
start page and sees it turn into the app by itself).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clipkit.ui import starting
from clipkit.ui.starting import MARKER, STATUS_PATH, StartPage, answers

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_start_page_answers_tells_its_stage_and_frees_the_address():
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    page = StartPage("127.0.0.1", port)
    try:
        code, headers, body = _get(base + "/")
        assert code == 200 and headers.get(MARKER) == "1" and b"clipkit is starting" in body
        assert answers(base + "/") == "start page"
        page.step("loading gradio")
        page.step("loading torch")
        code, headers, body = _get(base + STATUS_PATH)
        status = json.loads(body)
        assert code == 200 and status["stage"] == "loading torch" and status["done"] == ["loading gradio"]
        assert status["error"] is None and status["seconds"] > 0
        code, headers, _ = _get(base + "/gradio_api/info")  # API clients get "not yet", not the HTML page
        assert code == 503 and headers.get(MARKER) == "1" and headers.get("Retry-After")
    finally:
        page.close()
    assert answers(base + "/") is None
    with socket.socket() as s:  # the app can bind the address now
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    page.close()  # twice is harmless


def test_a_failed_start_is_shown_on_the_page(monkeypatch):
    monkeypatch.setattr(starting, "FAILED_GRACE_S", 0.0)
    port = _free_port()
    seen = {}
    with pytest.raises(OSError), StartPage("127.0.0.1", port) as page:
        page.step("building the page")
        page.fail("no such weights file: nope.pt")
        seen.update(json.loads(_get(f"http://127.0.0.1:{port}{STATUS_PATH}")[2]))
        raise OSError("no such weights file: nope.pt")
    assert seen["error"] == "no such weights file: nope.pt"
    assert answers(f"http://127.0.0.1:{port}/") is None  # closed after the grace


def test_a_taken_address_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*--port"):
            StartPage("127.0.0.1", port)


def test_the_command_line_imports_neither_gradio_nor_torch():
    code = "import sys, clipkit.cli\nprint([m for m in ('torch', 'gradio') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_clipkit_serve_answers_at_once_then_becomes_the_app(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "CLIPKIT_USER_PRESETS": str(tmp_path / "presets")}
    proc = subprocess.Popen([sys.executable, "-m", "clipkit", "serve", "--tiny", "--port", str(port),
                             "--output-dir", str(tmp_path / "out")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stages: list[str] = []
    try:
        first = None
        deadline = time.monotonic() + 180
        while (what := answers(base + "/")) != "app":
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the app did not answer"
            first = first or what
            if what == "start page":
                try:
                    _, headers, body = _get(base + STATUS_PATH)
                except (urllib.error.URLError, ConnectionError):
                    headers = {}  # the hand-over began between the two requests
                if MARKER in headers:  # else the app answered it
                    status = json.loads(body)
                    stages = status["done"] + [status["stage"]]
            time.sleep(0.05)
        assert first == "start page"  # the address answered before the app did
        assert stages[:1] == ["loading the web toolkit (gradio)"] and "building the page" in stages[-1:]
        assert b"gradio" in _get(base + "/")[2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_waiting_for_the_app_is_not_fooled_by_the_start_page():
    port = _free_port()
    with StartPage("127.0.0.1", port):
        with pytest.raises(RuntimeError, match="did not answer"):
            starting.wait_for_app(f"http://127.0.0.1:{port}/", timeout=0.5)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(RuntimeError, match="exited"):
        starting.wait_for_app(f"http://127.0.0.1:{port}/", gone, timeout=30)
