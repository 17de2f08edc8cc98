"""End to end in a real browser: `streamlit run app/main.py` in headless Chromium; a short
run watched live (its name in the legend, no stale status once it completes), then the
quick demo's five jobs in the sidebar queue and through the Pruning (with the prompts'
attention maps) and Embeddings pages; the rewind chart with its random-mask controls and
verdict; a seed group as one row with its band and verdict on the Runs page.

Uses Debian's chromium (`make test` installs it when missing) through Python Playwright,
never a browser Playwright downloads itself. With $E2VPT_SCREENSHOTS set (`make
screenshots`), one more test runs the quick demo as shipped and retakes the README's
pictures there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from group_helpers import stored_group

from e2vpt_core import PromptConfig
from e2vpt_core.demo import DEMO_TASK
from e2vpt_core.prune import sweep_prune
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian chromium is not installed (make test installs it)")]


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


@contextmanager
def _page():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1400})
        finally:
            browser.close()


def _screenshots(tmp_path: Path, retake: bool = False) -> Path:
    """Where a test's pictures go: $E2VPT_SCREENSHOTS for the README's, else the tmp dir."""
    shots = Path(os.environ["E2VPT_SCREENSHOTS"]) if retake else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def _record_requests(page) -> list[str]:
    """Every URL the page asks for, from now on (websockets aside)."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def _off_localhost(urls: list[str]) -> list[str]:
    """Requests that left this machine: an icon font from a CDN would be one (issue 36)."""
    return [url for url in urls if not url.startswith(("data:", "blob:"))
            and urlparse(url).hostname not in ("127.0.0.1", "localhost")]


def _reference_lines(page) -> list[str]:
    """The dotted reference lines' labels on the page's charts (`… %`)."""
    texts = page.locator(".js-plotly-plot .annotation-text").all_text_contents()
    return [text for text in texts if text.endswith("%")]


def _start_with_epochs(page, url: str, button: str, epochs_label: str, epochs: int) -> None:
    """Open the Train page, set an epochs input, press a button."""
    page.goto(url)
    page.get_by_role("button", name=button).wait_for(timeout=60_000)
    field = page.get_by_label(epochs_label, exact=True).first
    field.fill(str(epochs))
    field.press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name=button).click()


def test_train_a_short_run_and_watch_it_live(app_url, tmp_path):
    shots = _screenshots(tmp_path)
    with _page() as page:
        requests = _record_requests(page)
        _start_with_epochs(page, app_url, "Start", "Epochs", 2)
        page.get_by_text("Queued run").wait_for(timeout=30_000)
        page.get_by_text("running: step").first.wait_for(timeout=180_000)
        _scroll_down(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "train-live.png"))
        page.get_by_text("Validation top-1").first.wait_for(timeout=30_000)
        _wait_until(lambda: _reference_lines(page), 30, "chance on the top-1 panel")
        for line in _reference_lines(page):  # chance, or a figure read on val, named so
            assert line.startswith("chance ") or " (val) " in line, line
        legend = page.locator(".js-plotly-plot .legendtext")
        _wait_until(lambda: "e2vpt P10 T5 · counting" in legend.all_text_contents(), 60,
                    "the run's readable name in the curves' legend")
        page.get_by_text("completed: step").first.wait_for(timeout=300_000)
        page.wait_for_timeout(3000)  # a few more live redraws: nothing may say otherwise
        follow = page.get_by_role("combobox", name="Follow run").input_value()
        assert follow == "e2vpt P10 T5 · counting"  # the name alone: no status to go stale
        for stale in ("running", "queued"):
            assert page.get_by_text(f"{stale}: step").count() == 0
        assert "Nothing running or queued" in page.get_by_test_id("stSidebar").inner_text()

        page.get_by_role("link", name="Runs").click()
        page.get_by_text("e2vpt train").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "runs.png"))
        page.get_by_role("link", name="Parameter budget").click()
        page.get_by_role("heading", name="Parameter budget").wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
    assert (shots / "train-live.png").stat().st_size > 10_000
    assert requests and not _off_localhost(requests)  # no icon font from a CDN, offline


def test_the_quick_demo_fills_the_pruning_and_embedding_views(app_url, tmp_path):
    """Demo → live heatmap moves → slider changes the preview → Rewind queued → two disks."""
    shots = _screenshots(tmp_path)
    store = RunStore(tmp_path / "runs")
    with _page() as page:
        _start_with_epochs(page, app_url, "Run the quick demo", "Demo epochs", 1)
        page.get_by_text("Queued the demo").wait_for(timeout=30_000)
        page.get_by_text("Curves appear here once the run logs its first step.").wait_for(
            timeout=10_000)  # above the message: a line, not an empty chart pushing it down
        sidebar = page.get_by_test_id("stSidebar")
        e2vpt_name, vpt_name = f"e2vpt P10 T5 · {DEMO_TASK}", f"vpt-deep P10 · {DEMO_TASK}"
        jobs = [f"train {vpt_name}", f"importance of {e2vpt_name}",
                f"rewind 50 % tok / 25 % seg of {e2vpt_name}",
                f"embed {vpt_name} vs {e2vpt_name} (test)"]
        _wait_until(lambda: all(job in sidebar.inner_text() for job in jobs), 30,
                    "the demo's jobs in the sidebar queue")
        assert f"train {e2vpt_name}" in sidebar.inner_text()  # the fifth: queued or running
        page.screenshot(path=str(shots / "queue.png"))
        page.get_by_text("running: step").first.wait_for(timeout=180_000)
        runs = store.runs()
        e2vpt = str(runs[runs["method"] == "e2vpt"]["id"].iloc[0])

        page.get_by_role("link", name="Pruning").click()
        page.get_by_text("live snapshot from training, step").first.wait_for(timeout=120_000)
        source = page.get_by_text("Scores: ").first
        first_caption = source.inner_text()
        _wait_until(lambda: source.inner_text() != first_caption, 120,
                    "the live importance snapshot to move on")
        page.screenshot(path=str(shots / "pruning-live.png"))

        kept = page.get_by_test_id("stMetricValue").first
        preview = page.get_by_test_id("mask-kept")  # drawn in the browser, no round trip
        before, previewed = kept.inner_text(), preview.inner_text()
        page.get_by_role("slider", name="Token prune ratio").focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        _wait_until(lambda: preview.inner_text() != previewed, 5,
                    "the browser's mask preview to follow the token slider")
        _wait_until(lambda: kept.inner_text() != before, 30,
                    "the kept-entries metric to follow the released slider")
        assert int(kept.inner_text().split("/")[0]) < int(before.split("/")[0])
        page.get_by_role("slider", name="Segment prune ratio").focus()
        for _ in range(2):  # the demo's R = 8: two steps are its own 25 %
            page.keyboard.press("ArrowRight")
        ratios = page.locator(".mask-slider .segment-value")
        _wait_until(lambda: ratios.inner_text() == "25 %", 5, "segment ratio 25 % selected")

        _wait_until(lambda: store.get_run(e2vpt)["status"] == "completed", 300,
                    "the demo's E²VPT run to complete")
        # nothing pressed: the page redraws itself once the run it shows completes
        rewind = page.get_by_role("button", name="Rewind", exact=True)
        _wait_until(rewind.is_enabled, 30, "the Rewind button to be enabled")
        rewind.click()
        page.get_by_text("Queued 1 rewind job(s)").wait_for(timeout=30_000)
        # the caption and the no-retrain metric both read val, and say so
        page.get_by_text("both on val").first.wait_for(timeout=120_000)
        assert page.get_by_text("val top-1 ").count() >= 1
        legend = page.locator(".js-plotly-plot .legendtext")
        _wait_until(lambda: "parent (unpruned)" in legend.all_text_contents(), 60,
                    "the parent at ratio 0 on the trade-off chart")
        page.screenshot(path=str(shots / "pruning.png"))
        rewinds = store.jobs()
        assert (rewinds["kind"] == "rewind").sum() == 2  # the demo's and this one

        # what the prompts look at: computed once opened, pruned prompts marked as the
        # slider prunes them (5 of the demo's 10 at 50 %), and a slider release followed
        page.get_by_text("What the prompts look at").first.click()
        maps = page.locator(".js-plotly-plot", has=page.locator(".gtitle", has_text="Block 0"))
        maps.first.wait_for(timeout=120_000)
        _wait_until(lambda: maps.first.locator(".heatmaplayer .hm").count() == 10, 30,
                    "one heatmap per visual prompt")
        pruned = page.locator(".js-plotly-plot .annotation-text", has_text="· pruned")
        _wait_until(lambda: pruned.count() == 5, 30, "the pruned prompts marked")
        page.get_by_role("slider", name="Token prune ratio").focus()
        page.keyboard.press("ArrowRight")
        _wait_until(lambda: pruned.count() == 6, 60, "the marks to follow the released slider")

        page.get_by_role("link", name="Embeddings").click()  # while VPT-deep still trains
        expected = [f"{vpt_name} (test)", f"{e2vpt_name} (test)"]
        titles = page.locator(".js-plotly-plot .gtitle")
        _wait_until(lambda: titles.all_text_contents() == expected, 600,
                    "the VPT-deep and E²VPT disks side by side")
        page.get_by_text("Separability").first.wait_for(timeout=30_000)
        _scroll_down(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "embeddings.png"))

        page.get_by_role("link", name="Parameter budget").click()
        page.get_by_role("heading", name="Parameter budget").wait_for(timeout=60_000)
        page.get_by_test_id("stDataFrame").wait_for(timeout=60_000)  # counted after the inputs
        page.screenshot(path=str(shots / "budget.png"))


def test_the_rewind_chart_shows_its_random_controls_and_their_verdict(app_url, tmp_path,
                                                                     tiny_backbone):
    """Rewinds prepared through the store (a tiny run, 1 epoch each, val only): the chart
    draws the random-mask rewinds' spread and the verdict beside it says what they show."""
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(backbone=tiny_backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, eval_splits=("val",), device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4))
    parent = train_run(config, store)
    table = sweep_prune(store, parent.run_id, [0.5], epochs=1, timing_repeats=1,
                        controls="random")
    assert list(table["status"]) == ["completed"] * 4
    with _page() as page:
        page.goto(f"{app_url}/pruning")
        legend = page.locator(".js-plotly-plot .legendtext")
        _wait_until(lambda: "random masks (mean ± sd), segments 0%"
                    in legend.all_text_contents(), 120, "the random rewinds on the chart")
        assert page.locator(".js-plotly-plot .errorbar").count() >= 1  # their spread
        verdict = page.get_by_text("at 50 % of tokens pruned (fresh init").first
        verdict.wait_for(timeout=60_000)
        assert "importance keeps" in verdict.inner_text()
        assert " % val against " in verdict.inner_text() and "(3 draws)" in verdict.inner_text()
        verdict.scroll_into_view_if_needed()
        page.screenshot(path=str(_screenshots(tmp_path) / "rewind-verdict.png"))


@pytest.mark.skipif(not os.environ.get("E2VPT_SCREENSHOTS"),
                    reason="only when retaking docs/screenshots (make screenshots)")
def test_screenshots_of_the_quick_demo_as_shipped(app_url, tmp_path):
    """The README's pictures: the quick demo at its default epochs, every page with data."""
    shots = _screenshots(tmp_path, retake=True)
    store = RunStore(tmp_path / "runs")
    with _page() as page:
        page.goto(app_url)
        page.get_by_role("button", name="Run the quick demo").click()
        page.get_by_text("Queued the demo").wait_for(timeout=30_000)
        _wait_until(lambda: len(store.metrics(_run_of(store, "e2vpt"), ["val/top1"])) >= 2,
                    600, "two epochs of the demo's E²VPT run")
        page.reload()
        page.get_by_text("running: step").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "train-live.png"))

        e2vpt_name = f"e2vpt P10 T5 · {DEMO_TASK}"
        _open_pruning_on(page, e2vpt_name)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "pruning-live.png"))

        _wait_until(lambda: set(store.jobs()["status"]) == {"done"}, 900,
                    "every job of the demo")
        page.get_by_role("link", name="Runs").click()
        page.get_by_role("heading", name="One run").wait_for(timeout=60_000)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(shots / "runs.png"))

        _open_pruning_on(page, e2vpt_name)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(shots / "pruning.png"))

        page.get_by_role("link", name="Embeddings").click()
        page.locator(".js-plotly-plot .gtitle").first.wait_for(timeout=120_000)
        page.get_by_text("Separability").first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "embeddings.png"))

        page.get_by_role("link", name="Parameter budget").click()
        page.get_by_role("heading", name="Parameter budget").wait_for(timeout=60_000)
        page.get_by_test_id("stDataFrame").wait_for(timeout=60_000)  # counted after the inputs
        page.get_by_test_id("stDataFrame").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "budget.png"))


def test_a_seed_group_is_one_row_with_its_band_and_verdict(app_url, tmp_path):
    """Two 2-seed groups written to the store (no training): the Runs page shows each as
    one row, the newest one's curves as a band, and the verdict on the two."""
    store = RunStore(tmp_path / "runs")
    stored_group(store, "e2vpt-orientation-00aa", [70.0, 72.0])
    stored_group(store, "vpt-deep-orientation-00bb", [60.0, 61.0], method="vpt-deep")
    with _page() as page:
        page.goto(f"{app_url}/runs")
        page.get_by_text("test top-1: vpt-deep P10 · orientation − e2vpt P10 T5 · "
                         "orientation: -10.5 ± 1.1 points over 2 seeds").wait_for(
                             timeout=60_000)
        legend = page.locator(".js-plotly-plot .legendtext")
        _wait_until(lambda: "vpt-deep P10 · orientation (2 seeds)"
                    in legend.all_text_contents(), 30, "the group's curves as one entry")
        assert page.locator(".js-plotly-plot path[style*='fill: rgba']").count() >= 3  # bands
        cells = page.locator("[role=gridcell]")  # the table's cells, drawn on a canvas
        _wait_until(lambda: "71.0 ± 1.4 (2 seeds)" in cells.all_text_contents(), 30,
                    "the group's row with its mean ± sd")
        page.screenshot(path=str(_screenshots(tmp_path) / "runs-groups.png"))


def _open_pruning_on(page, run_name: str) -> None:
    """The Pruning page showing `run_name`'s scores."""
    page.get_by_role("link", name="Pruning").click()
    page.get_by_role("combobox", name="Run").first.wait_for(timeout=60_000)
    page.get_by_role("combobox", name="Run").first.click()
    page.get_by_role("option", name=run_name).first.click()
    page.get_by_text("Scores: ").first.wait_for(timeout=120_000)


def _run_of(store: RunStore, method: str) -> str:
    runs = store.runs()
    chosen = runs[(runs["method"] == method) & (runs["kind"] == "train")]
    return str(chosen["id"].iloc[0]) if not chosen.empty else ""
