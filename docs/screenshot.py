"""Retake the app's screenshots: serve it with the real (world) models, run each main tab once as a person would in
headless chromium, and capture every main tab at 1280x900 (desktop) and 390x844 (phone).

    .venv/bin/python docs/screenshot.py [--out docs/screenshots] [--readme docs/app.png]

Generate runs its default (Diffusion, "a red circle"); the first picture goes on to Edit (the edit-recolour
preset), to Img2img (img2img-recolour) and to the feed-forward stylizer through Send to; StyleGAN draws its
default samples; Backlit enhancement brightens a photo from ../shared/images/backlit where it is there; History
lists them all. Pictures go to ``--out`` as ``<tab>-1280x900.png`` and ``<tab>-390x844.png`` (reduced to 256
colours: small files; the phone shots start at the tab bar). ``--readme`` also writes the README's picture (the
Generate tab at 1300x1000, as before).

Needs Debian's chromium (``apt-get install chromium``) and the Playwright package from requirements-dev.txt.
Outputs and presets go to a temporary folder, so the screenshots never show another session's results.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from clipkit.ui.starting import wait_for_app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CLIPKIT_CHROMIUM", "/usr/bin/chromium")
PHOTO = ROOT.parent / "shared" / "images" / "backlit" / "91_51094235055_o.jpg"
TABS = {"generate": "Generate", "img2img": "Img2img", "edit": "Edit", "stylegan": "StyleGAN",
        "style-transfer": "Style transfer", "backlit-enhancement": "Backlit enhancement", "history": "History"}
SIZES = {"1280x900": (1280, 900), "390x844": (390, 844)}
RUN_TIMEOUT_MS = 600_000  # the default diffusion run takes ~2 minutes on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shrink(path: Path) -> None:
    """Rewrite a screenshot with at most 256 colours (the page is flat colours: a third of the bytes or less)."""
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def run_and_wait(page, name: str) -> None:
    """Press a tab's Run and wait for its result (its status says Done)."""
    from playwright.sync_api import expect

    page.locator(f"#{name}-run").click()
    expect(page.locator(f"#{name}-status")).to_contain_text("Done.", timeout=RUN_TIMEOUT_MS)
    expect(page.locator(f"#{name}-gallery img").first).to_be_visible()


def send(page, source: str, target: str) -> None:
    """Send the source tab's selected result to the method titled ``target`` (opens that tab)."""
    page.locator(f"#{source}-send-to input").click()
    page.get_by_role("option", name=target).click()
    page.locator(f"#{source}-send").click()


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title, exact=True).click()
    page.wait_for_timeout(500)


def settle(page) -> None:
    """Wait until the page stops drawing (images decoded, fades done) before a picture is taken."""
    page.evaluate("Promise.all([...document.images].filter(i => !i.complete).map(i => i.decode().catch(() => 0)))")
    page.wait_for_timeout(800)


def run_on_generated(page, title: str, method: str, preset: str | None = None) -> None:
    """Send Generate's picture to the tab of ``method`` (titled ``title``), load ``preset`` there, run it."""
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    send(page, "diffusion", f"{title} ({method})")
    expect(page.locator(f"#{method}-image img")).to_be_visible()
    if preset is not None:
        page.locator(f"#{method}-preset input").click()
        page.get_by_role("option", name=preset).click()
        expect(page.locator(f"#{method}-preset-info")).to_contain_text(preset)
    run_and_wait(page, method)


def make_runs(page, tmp: Path) -> None:
    """One result on every main tab, as a person would get them."""
    from playwright.sync_api import expect

    run_and_wait(page, "diffusion")
    run_on_generated(page, "Edit", "edit", "edit-recolour")  # red circle -> blue circle, shapes kept
    run_on_generated(page, "Img2img", "img2img", "img2img-recolour")  # red circle -> blue circle, in place
    run_on_generated(page, "Feed-forward", "stylize")
    open_tab(page, "StyleGAN")
    run_and_wait(page, "stylegan")
    open_tab(page, "Backlit enhancement")
    if PHOTO.is_file() and not page.locator("#enhance-missing").count():
        photo = tmp / "backlit.png"
        with Image.open(PHOTO) as im:
            im.convert("RGB").resize((480, 320), Image.Resampling.LANCZOS).save(photo)
        page.locator("#enhance-image input[type=file]").set_input_files(str(photo))
        expect(page.locator("#enhance-image img")).to_be_visible()
        run_and_wait(page, "enhance")


def shoot_tabs(page, out: Path, size: str) -> list[Path]:
    """Every main tab at ``size``; on a phone scrolled to the tab bar (the header above it is the same on all)."""
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    written = []
    for slug, title in TABS.items():
        open_tab(page, title)
        top = 0
        if width < 700:
            top = page.get_by_role("tab", name="Generate", exact=True).evaluate(
                "t => t.getBoundingClientRect().top + window.scrollY - 12")
        page.evaluate(f"window.scrollTo(0, {top})")
        settle(page)
        path = out / f"{slug}-{size}.png"
        page.screenshot(path=str(path), full_page=False)
        shrink(path)
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the tab screenshots")
    p.add_argument("--readme", type=Path, default=None, help="also write the README's picture here")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

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
            try:
                wait_for_app(url, server, timeout=120)
            except RuntimeError as e:
                sys.exit(f"{e}:\n{(tmp / 'server.log').read_text()[-3000:]}")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(180_000)
                page.goto(url)
                make_runs(page, tmp)
                a.out.mkdir(parents=True, exist_ok=True)
                written = [path for size in SIZES for path in shoot_tabs(page, a.out, size)]
                if a.readme is not None:
                    page.set_viewport_size({"width": 1300, "height": 1000})
                    open_tab(page, "Generate")
                    page.evaluate("window.scrollTo(0, 0)")
                    settle(page)
                    a.readme.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(a.readme), full_page=False)
                    written.append(a.readme)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
