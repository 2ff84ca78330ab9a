"""Drive the running app in headless Chromium: load a preset, run a short job on the tiny CLIP, see the result,
download it with its settings, reproduce a random seed, cancel a long run, send a result on, save a preset, get a
toast for a wrong preset, move live sliders, find the history after a reload, and reach every tab on a phone.
Screenshots go to the test's output folder (and outputs/browser-test/) for inspection.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; skipped without them unless
CLIPKIT_REQUIRE_BROWSER=1 (set by .ci/run), where their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipkit.methods.diffusion.clip_guided_diffusion import DiffusionSettings
from clipkit.ui.starting import answers

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CLIPKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 120
STEP_TIMEOUT_MS = 90_000


def _require() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not Path(CHROMIUM).is_file():
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("CLIPKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`clipkit serve --tiny` in a subprocess, on a free port, with its own output and preset folders."""
    _require()
    port = _free_port()
    env = {**os.environ, "CLIPKIT_USER_PRESETS": str(tmp_path / "presets"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "clipkit", "serve", "--tiny", "--port", str(port),
                             "--output-dir", str(tmp_path / "results")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while answers(url) is None:  # the start page; the test opens it and waits for it to turn into the app
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"app did not start: {(tmp_path / 'server.log').read_text()[-3000:]}")
        time.sleep(0.1)
    yield url, tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = ROOT / "outputs" / "browser-test"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, keep / name)
    return path


def test_app_in_headless_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a loaded machine draws slowly; each expectation still has to come true

    from clipkit.guidance.images import read_settings

    url, tmp_path = server
    results = tmp_path / "results"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(dir=tmp_path), executable_path=CHROMIUM,
                                                   headless=True, args=ARGS, accept_downloads=True,
                                                   viewport={"width": 1300, "height": 1000})
        ctx.set_default_timeout(STEP_TIMEOUT_MS)
        page = ctx.new_page()

        def run_tab(name: str) -> list[Path]:
            """Press the tab's Run and wait for its result files (new PNGs); returns them, by name."""
            before = set(results.glob(f"{name}-*.png"))
            page.locator(f"#{name}-run").click()
            for _ in range(STEP_TIMEOUT_MS // 250):
                made_now = set(results.glob(f"{name}-*.png")) - before
                if made_now:
                    return sorted(made_now)
                page.wait_for_timeout(250)
            raise AssertionError(f"the {name} run wrote no result")

        try:
            page.goto(url)  # while the app starts: its start page, which turns into the app by itself
            assert "starting" in page.title()
            expect(page.locator("#test-mode-banner")).to_be_visible(timeout=START_TIMEOUT_S * 1000)

            # the landing tab is Generate > Diffusion: a short sampling run draws a picture
            diffusion_steps = page.locator("#diffusion-steps input[type=number]")
            expect(diffusion_steps).to_have_value(str(DiffusionSettings().steps))  # the method's default
            diffusion_steps.fill("2")
            diffusion_steps.press("Enter")
            page.locator("#diffusion-run").click()
            expect(page.locator("#diffusion-gallery img").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.locator("#diffusion-status")).to_contain_text("Done.")
            expect(page.locator("#diffusion-record")).to_contain_text('"diffusion_model": "world-ldm"')
            page.get_by_role("tab", name="Pixels").click()

            # load a preset: the controls take its values
            page.locator("#generate-preset input").click()
            page.get_by_role("option", name="generate-preview").click()
            expect(page.locator("#generate-preset-info")).to_contain_text("generate-preview")
            expect(page.locator("#generate-prompt textarea")).to_have_value("a yellow star on a dark blue background")
            steps = page.locator("#generate-steps input[type=number]")
            expect(steps).to_have_value("8")

            # a short job: live status, then a result in the gallery
            steps.fill("3")
            steps.press("Enter")
            expect(page.locator("#generate-preset-info")).to_contain_text("(modified)")  # no longer the preset
            page.locator("#generate-run").click()
            expect(page.locator("#generate-gallery img").first).to_be_visible()
            expect(page.locator("#generate-status")).to_contain_text("Done.")
            expect(page.locator("#generate-record")).to_contain_text("a yellow star")
            _shot(page, tmp_path, "app-generate.png")

            # download: the PNG carries the settings that made it
            with page.expect_download() as dl:
                page.locator("#generate-download").click()
            saved = tmp_path / "download.png"
            dl.value.save_as(saved)
            s = read_settings(saved)["settings"]
            assert (s["method"], s["steps"], s["prompt"]) == ("generate", 3, "a yellow star on a dark blue background")

            # a random seed (-1): the seed drawn is recorded, and the result's settings rerun that very picture
            seed = page.locator("#generate-seed input[type=number]")
            seed.fill("-1")
            seed.press("Enter")
            (drawn_file,) = run_tab("generate")
            drawn = read_settings(drawn_file)["settings"]["seed"]
            assert drawn >= 0
            expect(page.locator("#generate-status")).to_contain_text(f"seed {drawn}")
            expect(page.locator("#generate-record")).to_contain_text(f'"seed": {drawn}')
            page.locator("#generate-reuse").click()
            expect(seed).to_have_value(str(drawn))
            (again,) = run_tab("generate")
            assert read_settings(again)["settings"]["seed"] == drawn
            with Image.open(drawn_file) as a, Image.open(again) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), "the recorded seed did not reproduce the picture"
            expect(page.locator("#generate-status")).to_contain_text("Done.")

            # cancel a long run: the partial result is kept and says so
            steps.fill("1000")  # long enough that Cancel lands mid-run on a loaded machine
            steps.press("Enter")
            page.locator("#generate-prompt textarea").click()
            page.keyboard.press("Control+Enter")  # the shortcut runs the tab in view
            # a loaded machine can keep the run queued for a while before its first step
            expect(page.locator("#generate-status")).to_contain_text("Step", timeout=STEP_TIMEOUT_MS)
            expect(page.locator("#generate-run")).to_be_disabled()  # no second run over the live one
            page.locator("#generate-cancel").click()
            expect(page.locator("#generate-status")).to_contain_text("Cancelled — partial result kept.")
            expect(page.locator("#generate-run")).to_be_enabled()
            expect(page.locator("#generate-gallery")).to_contain_text("cancelled")
            expect(page.locator("#generate-record")).to_contain_text('"cancelled": true')

            # send the result on: the Edit tab opens with it as its picture
            page.locator("#generate-send-to input").click()
            page.get_by_role("option", name="Edit (edit)").click()
            page.locator("#generate-send").click()
            expect(page.locator("#edit-image img")).to_be_visible()
            expect(page.locator("#edit-run")).to_be_visible()
            page.get_by_role("tab", name="Generate").click()
            page.get_by_role("tab", name="Pixels").click()

            # save the controls as a preset
            page.locator("#tab-generate").get_by_text("Save as preset").click()
            page.locator("#generate-save-name textarea, #generate-save-name input").first.fill("browser-look")
            page.locator("#generate-save").click()
            expect(page.locator("#generate-preset-info")).to_contain_text("Saved preset")
            expect(page.get_by_role("cell", name="browser-look.json")).to_be_visible()
            assert (tmp_path / "presets" / "browser-look.json").is_file()

            # a preset written while the app runs (another tab, a script) shows when the list is opened
            late = (tmp_path / "presets" / "browser-look.json").read_text().replace("browser-look", "late-look")
            (tmp_path / "presets" / "late-look.json").write_text(late)
            page.locator("#generate-preset input").click()
            expect(page.get_by_role("option", name="late-look")).to_be_visible()
            page.keyboard.press("Escape")

            # a preset of another method: one readable message, the controls untouched and not in an error state
            other = tmp_path / "other-method.json"
            other.write_text((ROOT / "clipkit" / "methods" / "image" / "presets" / "edit-recolour.json").read_text())
            with page.expect_file_chooser() as chooser:
                page.locator("#generate-preset-upload").click()
            chooser.value.set_files(str(other))
            expect(page.locator("#generate-preset-info")).to_contain_text("is a preset for method 'edit'")
            expect(page.get_by_test_id("toast-body").filter(has_text="is a preset for method 'edit'")).to_be_visible()
            expect(page.locator("#generate-steps input[type=number]")).to_have_value("1000")
            expect(page.locator("#tab-generate .error")).to_have_count(0)

            # style presets cross methods: a CLIPstyler artist preset drives PODA too
            page.get_by_role("tab", name="Style transfer").click()
            page.get_by_role("tab", name="PODA").click()  # a CLIPstyler artist preset drives PODA too
            page.locator("#poda-preset input").click()
            page.get_by_role("option", name="style-monet").click()
            expect(page.locator("#poda-prompt textarea")).to_have_value(
                "impressionist painting of water lilies by Claude Monet")
            expect(page.locator("#poda-steps input[type=number]")).to_have_value("100")  # PODA's own steps stay
            # the shipped stylizer runs on an uploaded photo; a wrong checkpoint path is named, not a crash
            page.get_by_role("tab", name="Feed-forward").click()
            expect(page.locator("#stylize-missing")).to_have_count(0)
            page.locator("#stylize-run").click()
            expect(page.get_by_text("upload an image first").first).to_be_visible()
            tiny_photo = tmp_path / "tiny.png"
            Image.new("RGB", (64, 48), (120, 80, 60)).save(tiny_photo)
            page.locator("#stylize-image input[type=file]").set_input_files(str(tiny_photo))
            expect(page.locator("#stylize-image img")).to_be_visible()
            page.locator("#stylize-run").click()
            expect(page.locator("#stylize-status")).to_contain_text("Done.")
            expect(page.locator("#stylize-gallery img").first).to_be_visible()
            expect(page.locator("#stylize-compare img")).to_have_count(2)  # before / after at one size
            frame = page.locator("#stylize-compare").bounding_box()
            for img in page.locator("#stylize-compare img").all():  # each whole picture inside the box, not a band
                box = img.bounding_box()
                assert frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"], (frame, box)
            # a live slider: the strength redraws the result without Run
            after = page.locator("#stylize-compare img").nth(1)
            shown = after.get_attribute("src")
            strength = page.locator("#stylize-strength input[type=number]")
            strength.fill("0.5")
            strength.press("Tab")  # the slider's release
            expect(page.locator("#stylize-status")).to_contain_text("Live: Strength 0.5")
            expect(after).not_to_have_attribute("src", shown)
            checkpoint = page.locator("#stylize-checkpoint textarea, #stylize-checkpoint input").first
            checkpoint.fill(str(tmp_path / "no-such-stylizer.safetensors"))
            page.locator("#stylize-run").click()
            # a server path is refused without saying whether it exists (the app's trust boundary)
            expect(page.get_by_text("this app does not offer that file").first).to_be_visible()

            # an edit made with a painted mask: opening its picture and loading its PNG puts the mask back on
            # the painter, and Run uses it
            from clipkit import api

            picture = Image.new("RGB", (64, 48), (200, 40, 40))
            painted = Image.new("L", (64, 48), 0)
            painted.paste(255, (0, 0, 32, 48))
            made = api.run("edit", image=picture, mask=painted, prompt="a blue square", steps=1, cutouts=2,
                           clip="tiny").save(tmp_path / "masked-edit.png")
            picture.save(tmp_path / "picture.png")
            page.get_by_role("tab", name="Edit").click()
            page.locator("#edit-image input[type=file]").set_input_files(str(tmp_path / "picture.png"))
            expect(page.locator("#edit-image img")).to_be_visible()
            page.locator("#edit-prompt textarea").fill("a blue square")
            page.locator("#edit-steps input[type=number]").fill("2")
            page.locator("#edit-steps input[type=number]").press("Enter")

            def run_edit() -> Path:
                return run_tab("edit")[0]

            assert api.recorded_mask(run_edit()) is None  # nothing painted: the whole picture is edited
            # paint by hand: the run's mask is the stroke, not the picture
            recorded = None
            for _ in range(3):  # under load the editor can miss a stroke drawn before it is ready: draw again
                page.locator("#edit-image-mask button[aria-label='Brush']").first.click(timeout=5000)
                box = page.locator("#edit-image-mask canvas").first.bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(cx - 40, cy)
                page.mouse.down()
                page.mouse.move(cx + 40, cy, steps=12)
                page.mouse.up()
                page.wait_for_timeout(1000)
                recorded = api.recorded_mask(run_edit())
                if recorded is not None:
                    break
            assert recorded is not None, "three mouse strokes on the painter gave no mask"
            stroke = np.asarray(recorded) > 0
            h, w = stroke.shape  # the brush is wide on a 64 x 48 picture, but the corners stay unpainted
            assert stroke[h // 2, w // 2] and not stroke[[0, 0, -1, -1], [0, -1, 0, -1]].any(), stroke.mean()
            _shot(page, tmp_path, "app-edit-stroke.png")
            # an edit PNG's mask comes back in place of the strokes, shown as a tint, and the next run uses it
            shown = tmp_path / "painter.png"
            tinted = red = 0
            for _ in range(2):  # gradio's editor can redraw an update drawn over fresh strokes off view: load again
                with page.expect_file_chooser() as chooser:
                    page.locator("#edit-preset-upload").click()
                chooser.value.set_files(str(made))
                expect(page.locator("#edit-preset-info")).to_contain_text("and its mask")
                for _ in range(40):  # the painter draws its new picture a moment after the answer arrives
                    page.wait_for_timeout(500)
                    page.locator("#edit-image-mask").screenshot(path=str(shown))
                    with Image.open(shown) as im:
                        px = np.asarray(im.convert("RGB"), dtype=np.int16).reshape(-1, 3)
                    tinted = int((np.abs(px - (227, 20, 147)).max(-1) < 8).sum())  # (200, 40, 40) half-way to magenta
                    red = int((np.abs(px - (200, 40, 40)).max(-1) < 8).sum())
                    if tinted > 0.05 * len(px):
                        break
                if tinted > 0.05 * len(px):
                    break
            assert tinted > 0.05 * len(px), (f"the restored mask is not shown ({tinted} of {len(px)} px tinted, "
                                             f"{red} px of the picture's red)")
            again = api.recorded_mask(run_edit())
            assert np.array_equal(np.asarray(again), np.asarray(painted)), "the run did not use the restored mask"
            _shot(page, tmp_path, "app-edit-mask.png")

            # edit a real photo: backlit enhancement with the published weights, where they are present
            photo = ROOT.parent / "shared" / "images" / "backlit" / "91_51094235055_o.jpg"
            if photo.is_file() and not (page.locator("#enhance-missing").count()):
                small = tmp_path / "backlit.png"
                with Image.open(photo) as im:
                    im.convert("RGB").resize((384, 256)).save(small)
                page.get_by_role("tab", name="Backlit enhancement").click()
                page.locator("#enhance-preset input").click()
                page.get_by_role("option", name="enhance-gentle").click()
                expect(page.locator("#enhance-preset-info")).to_contain_text("enhance-gentle")
                page.locator("#enhance-image input[type=file]").set_input_files(str(small))
                expect(page.locator("#enhance-image img")).to_be_visible()
                page.locator("#enhance-run").click()
                expect(page.locator("#enhance-status")).to_contain_text("Done.")
                expect(page.locator("#enhance-record")).to_contain_text('"strength": 0.6')
                expect(page.locator("#enhance-compare img")).to_have_count(2)  # the photo against its result
                # the strength redraws live from the run's illumination map (no second pass of the network)
                after = page.locator("#enhance-compare img").nth(1)
                shown = after.get_attribute("src")
                strength = page.locator("#enhance-strength input[type=number]")
                strength.fill("1.2")
                strength.press("Tab")
                expect(page.locator("#enhance-status")).to_contain_text("Live: Strength 1.2")
                expect(after).not_to_have_attribute("src", shown)
                _shot(page, tmp_path, "app-enhance.png")

            # history survives a reload: the saved results are listed and one opens in its own tab
            page.reload()
            page.get_by_role("tab", name="History").click()
            expect(page.locator("#history-gallery img").first).to_be_visible()
            page.locator("#history-gallery img").first.click()
            expect(page.locator("#history-record")).to_contain_text('"method"')
            page.locator("#history-open").click()
            expect(page.locator("#edit-preset-info, #enhance-preset-info").filter(
                has_text="from-history").first).to_be_visible()

            # on a phone every main tab is in view (none behind a "..." menu), and the painter's toolbar does not
            # cover its label
            page.set_viewport_size({"width": 390, "height": 844})
            for name in ["Generate", "Edit", "StyleGAN", "Style transfer", "Backlit enhancement", "History"]:
                tab = page.get_by_role("tab", name=name, exact=True)
                expect(tab).to_be_visible()
                box = tab.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
            page.get_by_role("tab", name="Edit", exact=True).click()
            painter = page.locator("#edit-image-mask")
            painter.scroll_into_view_if_needed()
            label = painter.locator("label").first.bounding_box()
            bar = painter.locator(".top-panel").first.bounding_box()
            assert bar["y"] >= label["y"] + label["height"] or bar["x"] >= label["x"] + label["width"], (label, bar)
            _shot(page, tmp_path, "app-phone.png")
        except Exception:
            print((tmp_path / "server.log").read_text()[-3000:])
            try:  # a page too busy to draw must not hide the failure itself
                _shot(page, tmp_path, "app-failure.png")
            except Exception as shot_error:
                print(f"no failure screenshot: {shot_error}")
            raise
        finally:
            ctx.close()
