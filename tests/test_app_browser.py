"""The studio in a real browser: headless Debian Chromium driven by Playwright, against ``python app.py``
serving a tiny random pipeline on 127.0.0.1.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: the system
Chromium is used). Skips without them, except in CI (CI=true) where their absence fails the test.
``JAVIS_DOCS_SCREENSHOT=1`` also refreshes docs/app.png, the README's screenshot.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from javis_core.media import probe
from javis_core.tiny import save_tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
GENERATION_TIMEOUT_MS = 240_000


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright)"
    else:
        if Path(CHROMIUM).exists():
            return sync_playwright
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """``python app.py --model <tiny pipeline dir>`` in a subprocess; yields its URL, its log and Playwright."""
    sync_playwright = _require_browser()  # before the app starts: a skip costs nothing
    root = tmp_path_factory.mktemp("browser")
    model = save_tiny_pipeline(root / "tiny")
    port = _free_port()
    log = (root / "app.log").open("w")
    command = [sys.executable, "app.py", "--model", str(model), "--device", "cpu", "--host", "127.0.0.1",
               "--port", str(port), "--output-dir", str(root / "out")]  # fmt: skip
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"app did not start:\n{(root / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, root / "app.log", sync_playwright
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_generate_in_browser(served_app, tmp_path):
    url, app_log, sync_playwright = served_app
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(url)
            page.locator("#prompt textarea").fill("A blacksmith hammers a glowing horseshoe, sparks and clangs")
            _set_number(page, "duration", 2)
            page.locator("#resolution").get_by_label("240p").check()
            page.locator("#aspect input").click()
            page.get_by_role("option", name="Portrait").click()
            page.get_by_text("Advanced").click()
            _set_number(page, "steps", 2)
            assert "loads on the first Generate" in page.locator("#model-status").inner_text()

            page.locator("#generate").click()
            player = page.locator("#result-video video")
            player.wait_for(state="attached", timeout=GENERATION_TIMEOUT_MS)
            src = player.get_attribute("src")
            assert src, "the video element has no source"
            clip = tmp_path / "from_browser.mp4"
            clip.write_bytes(page.request.get(src).body())
            info = probe(clip)
            assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
            assert (info["width"], info["num_frames"]) == (240, 33)  # portrait 240p, 2 s at 16 fps
            assert info["height"] > info["width"]
            history = page.locator("#history img, #history video")
            history.first.wait_for(state="attached", timeout=30_000)
            assert history.count() == 1
            page.wait_for_function(
                r"() => /\bloaded\s*$/.test(document.querySelector('#model-status').innerText)", timeout=10_000
            )
            # the page must be able to play it: the browser reports a duration once metadata has loaded
            duration = player.evaluate(
                "v => new Promise(r => v.readyState >= 1 ? r(v.duration) : v.addEventListener('loadedmetadata', "
                "() => r(v.duration)))"
            )
            assert 1.9 < duration < 2.3
            page.screenshot(path=str(ARTIFACTS / "app_browser.png"), full_page=True)
            if os.environ.get("JAVIS_DOCS_SCREENSHOT"):
                page.get_by_text("Advanced").click()  # folded, as a visitor first sees the page
                page.set_viewport_size({"width": 1400, "height": 900})
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(tmp_path / "app.png"))
                with Image.open(tmp_path / "app.png") as shot:  # 256 colours keep the README image small
                    shot.convert("RGB").quantize(256).save(REPO / "docs" / "app.png", optimize=True)
                page.get_by_text("Advanced").click()

            # a bad input gives a readable error and keeps what was produced
            page.locator("#prompt textarea").fill("   ")
            page.locator("#generate").click()
            page.get_by_text("Prompt is empty").first.wait_for(timeout=30_000)
            assert player.get_attribute("src") == src
            assert history.count() == 1

            # a long generation stops on Cancel, and the earlier result stays
            page.locator("#prompt textarea").fill("A slow one")
            page.get_by_text("Prompt is empty").first.wait_for(state="detached", timeout=30_000)  # its toast went
            _set_number(page, "steps", 100)
            page.locator("#generate").click()
            page.get_by_text("Denoising").first.wait_for(timeout=60_000)
            page.locator("#cancel").click()
            page.get_by_text("Generation cancelled.").first.wait_for(timeout=30_000)  # a notice, not an error
            assert page.get_by_text("Error", exact=True).count() == 0
            page.get_by_text("Denoising").first.wait_for(state="detached", timeout=30_000)
            deadline = time.monotonic() + 30  # the server stops after the step it is in
            while not (stopped := re.search(r"cancelled after step (\d+) of 100", app_log.read_text())):
                assert time.monotonic() < deadline, "the denoising loop did not stop"
                time.sleep(0.2)
            assert int(stopped.group(1)) < 100
            assert player.get_attribute("src") == src and history.count() == 1
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app_browser_failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _result_clip(page, previous: str | None, path: Path) -> tuple[str, dict]:
    """Waits for a new result video, saves it to ``path`` and returns its source and probe."""
    player = page.locator("#result-video video")
    page.wait_for_function(
        "prev => { const v = document.querySelector('#result-video video'); return v && v.src && v.src !== prev; }",
        arg=previous or "", timeout=GENERATION_TIMEOUT_MS,
    )  # fmt: skip
    src = player.get_attribute("src")
    path.write_bytes(page.request.get(src).body())
    return src, probe(path)


def test_conditioned_modes_in_browser(served_app, tmp_path):
    """"Start from" shows each task's upload; video to audio keeps the uploaded picture, audio to video the uploaded
    sound, image to audio+video starts from the picture; a task without its upload says what is missing."""
    import numpy as np

    from javis_core.media import read_video, write_video, write_wav

    url, _, sync_playwright = served_app
    frames = np.full((33, 240, 432, 3), 30, np.uint8)
    for index, frame in enumerate(frames):  # a square that moves right
        frame[80:160, 20 + 8 * index : 100 + 8 * index] = (220, 60, 40)
    write_video(tmp_path / "clip.mp4", frames, fps=16)
    sound = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    write_wav(tmp_path / "tone.wav", sound)
    Image.fromarray(frames[0]).save(tmp_path / "picture.png")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        try:
            page.goto(url)
            page.locator("#prompt textarea").fill("a red block slides and hums")
            page.locator("#resolution").get_by_label("240p").check()
            page.get_by_text("Advanced").click()
            _set_number(page, "steps", 2)
            task = page.locator("#task")

            task.get_by_label("Video to audio").check()
            page.locator("#video-in").wait_for(state="visible")
            assert page.locator("#audio-in").is_hidden() and page.locator("#image-in").is_hidden()
            assert page.locator("#strength").is_visible() and page.locator("#extend-to").is_hidden()
            page.locator("#generate").click()  # nothing uploaded yet
            page.get_by_text("Video to audio needs a video: upload one first.").first.wait_for(timeout=30_000)
            page.locator("#video-in input[type=file]").set_input_files(str(tmp_path / "clip.mp4"))
            page.locator("#video-in video").wait_for(state="attached", timeout=30_000)
            page.locator("#generate").click()
            src, info = _result_clip(page, None, tmp_path / "v2a.mp4")
            assert info["audio_codec"] == "aac"
            assert (info["width"], info["height"], info["num_frames"]) == (432, 240, 33)
            kept = np.asarray(read_video(tmp_path / "v2a.mp4")[0], np.float32)
            assert np.abs(kept - frames.astype(np.float32)).mean() < 3  # the uploaded picture, not a VAE round trip

            task.get_by_label("Audio to video").check()
            page.locator("#audio-in").wait_for(state="visible")
            assert page.locator("#video-in").is_hidden()
            page.locator("#audio-in input[type=file]").set_input_files(str(tmp_path / "tone.wav"))
            page.locator("#audio-in audio, #audio-in .waveform-container, #audio-in wave").first.wait_for(
                state="attached", timeout=30_000)  # fmt: skip
            page.locator("#generate").click()
            src, info = _result_clip(page, src, tmp_path / "a2v.mp4")
            # the clip is as long as the sound fills: 29 frames (4k+1) of the 2 s
            assert info["video_codec"] == "h264" and info["num_frames"] == 29
            assert info["audio_duration"] == pytest.approx(29 / 16, abs=0.05)
            heard = np.asarray(read_video(tmp_path / "a2v.mp4")[1], np.float32)[:30000]
            assert np.corrcoef(heard, sound[: len(heard)])[0, 1] > 0.9  # the uploaded tone (AAC-coded)

            task.get_by_label("Image to audio + video").check()
            page.locator("#image-in").wait_for(state="visible")
            assert page.locator("#extend-to").is_visible()
            page.locator("#image-in input[type=file]").set_input_files(str(tmp_path / "picture.png"))
            page.locator("#image-in img").wait_for(state="attached", timeout=30_000)
            page.locator("#generate").click()
            _, info = _result_clip(page, src, tmp_path / "i2av.mp4")
            first = np.asarray(read_video(tmp_path / "i2av.mp4")[0][0], np.float32)
            assert info["audio_codec"] == "aac" and np.abs(first - frames[0].astype(np.float32)).mean() < 3
            page.screenshot(path=str(ARTIFACTS / "app_browser_conditioned.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app_browser_conditioned_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
