"""Retake the README screenshot: serve the app with the real (world) models, run the Generate tab's default
(Diffusion) in headless chromium and capture the page.

    .venv/bin/python docs/screenshot.py [--out docs/app.png]

Needs Debian's chromium (``apt-get install chromium``) and the Playwright package from requirements-dev.txt.
Outputs and presets go to a temporary folder, so the screenshot never shows another session's results.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CLIPKIT_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "app.png")
    a = p.parse_args()
    from playwright.sync_api import expect, sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="clipkit-shot-"))
    port = free_port()
    env = {**os.environ, "CLIPKIT_USER_PRESETS": str(tmp / "presets"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("CLIPKIT_TEST_MODELS", None)
    with open(tmp / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "clipkit", "serve", "--port", str(port),
                                   "--output-dir", str(tmp / "results")], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None:
                        sys.exit(f"app did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
                    time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.set_default_timeout(180_000)
                page.goto(url)
                page.locator("#diffusion-run").click()
                expect(page.locator("#diffusion-status")).to_contain_text("Done.", timeout=300_000)
                expect(page.locator("#diffusion-gallery img").first).to_be_visible()
                page.evaluate("window.scrollTo(0, 0)")  # selecting the result scrolled the page down
                time.sleep(1.0)  # let the gallery and preview finish fading in
                a.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.out), full_page=False)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
