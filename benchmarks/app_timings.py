"""How the app feels: `make run` to first render, page switches, slider to preview, live
update interval while a run trains. Headless Debian chromium through Playwright.

    python benchmarks/app_timings.py            # needs `make setup` and chromium
    python benchmarks/app_timings.py --store /tmp/s --app-root /tmp/before --watch 0

It trains one short E²VPT run on the bundled backbone first (so the Pruning page has
scores), then starts the app with `make run` on a private store and a free port, and
queues a second run to watch live. Times are wall-clock, on whatever else the machine runs.
To compare two versions of the app under the same load, give both the same `--store` (its
trained run is reused, the store's runs are left in place) and each its checkout with
`--app-root`, and alternate the two; `--watch 0` skips the live view.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from e2vpt_core import PromptConfig
from e2vpt_core.jobs import ensure_worker, submit_train
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = {"Runs": "Runs", "Parameter budget": "parameter budget", "Pruning": "Pruning",
         "Embeddings": "Embeddings", "Train": "Train"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_change(read, before: str, timeout: float = 60.0) -> float:
    """Seconds until `read()` differs from `before` (polled every 10 ms)."""
    start = time.perf_counter()
    while read() == before:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"no change from {before!r} within {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.0f} ms "
            f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})")


def first_render(page, url: str, started: float) -> float:
    """From `make run` starting to the Train page's Start button on screen."""
    while True:
        try:
            page.goto(url, timeout=5_000)
            break
        except Exception:  # the server is not listening yet
            time.sleep(0.1)
    page.get_by_role("button", name="Start").wait_for(timeout=120_000)
    return time.perf_counter() - started


def page_switches(page, rounds: int) -> dict[str, list[float]]:
    """Seconds from a click in the sidebar to the page's heading, per page (the first
    round is each page's first visit)."""
    times: dict[str, list[float]] = {link: [] for link in PAGES}
    for _ in range(rounds):
        for link, heading in PAGES.items():
            start = time.perf_counter()
            page.get_by_role("link", name=link, exact=True).click()
            page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
            times[link].append(time.perf_counter() - start)
    return times


def slider_to_preview(page, moves: int) -> list[float]:
    """Arrow-key moves of the token slider until the preview's kept count changes: the
    browser-side preview's own line where the page has one (since the sliders moved into
    the browser), else the kept-entries metric that the server redraws."""
    page.get_by_role("link", name="Pruning", exact=True).click()
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=60_000)
    in_browser = page.get_by_test_id("mask-kept")
    kept = in_browser if in_browser.count() else page.get_by_test_id("stMetricValue").first
    slider = page.get_by_role("slider").first
    times = []
    for index in range(moves):
        before = kept.inner_text()
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowRight" if index < moves // 2 else "ArrowLeft")
        times.append(time.perf_counter() - start + wait_change(kept.inner_text, before))
    return times


def live_intervals(page, store: RunStore, config: TrainConfig, watch: float) -> list[float]:
    """Seconds between successive changes of the Train page's progress line."""
    _, run_id = submit_train(store, config)
    ensure_worker(store)
    page.get_by_role("link", name="Train", exact=True).click()
    progress = page.get_by_text("running: step").first
    progress.wait_for(timeout=300_000)
    changes, text, end = [], progress.inner_text(), time.perf_counter() + watch
    while time.perf_counter() < end and store.get_run(run_id)["status"] == "running":
        try:
            changes.append(wait_change(progress.inner_text, text, timeout=30))
        except TimeoutError:
            break
        text = progress.inner_text()
    return changes


def trained_store(directory: Path, config: TrainConfig) -> RunStore:
    """The store at `directory`, with a completed run of `config` (trained when missing)."""
    store = RunStore(directory)
    runs = store.runs()
    if runs.empty or not (runs["status"] == "completed").any():
        print("training a 1-epoch E²VPT run for the Pruning page…", flush=True)
        train_run(config, store)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="page-switch rounds")
    parser.add_argument("--moves", type=int, default=10, help="slider moves")
    parser.add_argument("--watch", type=float, default=60.0,
                        help="seconds of live view (0: skip it)")
    parser.add_argument("--store", type=Path, help="a store to keep and reuse (default: a "
                        "temporary one)")
    parser.add_argument("--app-root", type=Path, default=ROOT,
                        help="the checkout whose `make run` is timed (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(dataset="builtin:orientation", prompt=PromptConfig("e2vpt"),
                             epochs=1)
        store = trained_store(args.store or Path(tmp) / "runs", config)
        port = free_port()
        env = {**os.environ, "E2VPT_STORE": str(store.root),
               "STREAMLIT_SERVER_PORT": str(port), "STREAMLIT_SERVER_HEADLESS": "true"}
        started = time.perf_counter()
        server = subprocess.Popen(["make", "run"], cwd=args.app_root, env=env,
                                  start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=BROWSER_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                render = first_render(page, f"http://127.0.0.1:{port}", started)
                print(f"make run → first render: {render:.1f} s", flush=True)
                switches = page_switches(page, args.rounds)
                print(f"page switch: {summary(sum(switches.values(), []))}", flush=True)
                print("  round 1 (first visits but Train): " + ", ".join(
                    f"{link} {times[0] * 1000:.0f} ms" for link, times in switches.items()))
                print(f"slider → preview: {summary(slider_to_preview(page, args.moves))}",
                      flush=True)
                if args.watch > 0:
                    intervals = live_intervals(page, store, config.replace(epochs=3),
                                               args.watch)
                    print(f"live view update interval while training: {summary(intervals)}")
                browser.close()
        finally:
            os.killpg(server.pid, 15)
            subprocess.run(["pkill", "-f", f"e2vpt_core.jobs --store {store.root}"],
                           check=False)


if __name__ == "__main__":
    main()
