"""End to end in a real browser: `streamlit run app/main.py`, headless Chromium, a short run.

Uses Debian's chromium (`make test` installs it when missing) through Python Playwright,
never a browser Playwright downloads itself. Screenshots go to $E2VPT_SCREENSHOTS (default:
the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium is not installed (make test installs it)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    port = _free_port()
    env = {**os.environ, "E2VPT_STORE": str(tmp_path / "runs")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("streamlit did not answer its health check within 60 s")
    yield url
    server.kill()
    server.wait(timeout=30)
    subprocess.run(["pkill", "-f", f"e2vpt_core.jobs --store {tmp_path / 'runs'}"], check=False)


def _scroll_down(page) -> None:
    page.evaluate("document.querySelectorAll('section, div').forEach(e => {"
                  " if (e.scrollHeight > e.clientHeight + 50) e.scrollTop = e.scrollHeight; })")


def test_train_a_short_run_and_watch_it_live(app_url, tmp_path):
    shots = Path(os.environ.get("E2VPT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(app_url)
        page.get_by_role("button", name="Start").wait_for(timeout=60_000)
        epochs = page.get_by_label("Epochs", exact=True).first
        epochs.fill("2")
        epochs.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start").click()
        page.get_by_text("Queued run").wait_for(timeout=30_000)
        page.get_by_text("running: step").first.wait_for(timeout=180_000)
        _scroll_down(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "train-live.png"))
        page.get_by_text("Validation top-1").first.wait_for(timeout=30_000)
        page.get_by_text("completed").first.wait_for(timeout=300_000)

        page.get_by_role("link", name="Runs").click()
        page.get_by_text("e2vpt train").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "runs.png"))
        browser.close()
    assert (shots / "train-live.png").stat().st_size > 10_000
