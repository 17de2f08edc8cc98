"""What watching training costs: the app server's and the browser's CPU while one tab
follows a training run, and the quick demo's wall time with 0, 1 and 2 tabs following.

    python benchmarks/live_overhead.py                       # both parts, this checkout
    python benchmarks/live_overhead.py --repeats 3 --app-root /tmp/before
    python benchmarks/live_overhead.py --skip-demo --window 60

(a) A fresh store gets one long E²VPT training job; the app is started on it (this
interpreter's `streamlit run app/main.py` in `--app-root`, a private port, its own worker)
and one headless Debian chromium tab (Playwright) opens the Train page, which follows the
run. Over `--window` seconds of training: the server's CPU-seconds per minute (user +
system of its process, from /proc/<pid>/stat) and the browser's (its chromium processes).
(b) The quick demo, timed from its submission until every job is done: with 0 tabs the way
`benchmarks/demo_time.py` runs it (submit_demo + run_worker in one process, no app); with
N tabs through the app (its own worker), a tab clicking "Run the quick demo" as
tests/test_browser.py does and N - 1 more tabs opened on the Train page once it is queued,
all following until the end. Conditions alternate within each repeat (in a rotated order),
and the ratios are of medians to the headless median.

Code under test is the `--app-root` checkout's (server, worker and headless run all start
there, so its `e2vpt_core` is imported); compare two checkouts by running this twice on an
idle machine, or alternate them with `--repeats 1` runs. Prints one line per measurement
and a summary; `--results FILE` appends them as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu"]
FINISHED = ("done", "failed", "cancelled")
TICK = os.sysconf("SC_CLK_TCK")
HEADLESS = """
import sys, time
import torch  # before the clock, as in benchmarks/demo_time.py
from e2vpt_core.demo import submit_demo
from e2vpt_core.jobs import run_worker
from e2vpt_core.store import RunStore
store = RunStore(sys.argv[1])
start = time.perf_counter()
submit_demo(store, sys.argv[2], epochs=int(sys.argv[3]))
run_worker(store, idle_exit=0, poll=0.05, log=lambda line: None)
print(time.perf_counter() - start)
"""
SUBMIT = """
import sys
from e2vpt_core.demo import demo_config
from e2vpt_core.jobs import submit_train
from e2vpt_core.store import RunStore
submit_train(RunStore(sys.argv[1]), demo_config("e2vpt", sys.argv[2], int(sys.argv[3])))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its threads, dead ones included; no children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def chromium_seconds() -> float:
    """CPU of the chromium processes this benchmark started (through Playwright's driver),
    so a browser someone else runs on the machine is not counted."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # exited meanwhile
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, pending = 0.0, list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        try:
            if "chromium" in os.readlink(f"/proc/{pid}/exe"):
                total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def jobs_left(store: Path) -> tuple[int, int]:
    """(jobs not finished, jobs failed or cancelled), read straight from the database."""
    with sqlite3.connect(store / "store.sqlite", timeout=60) as connection:
        rows = connection.execute("SELECT status FROM jobs").fetchall()
    return (sum(status not in FINISHED for status, in rows),
            sum(status in ("failed", "cancelled") for status, in rows))


def worker_pid(store: Path) -> int | None:
    """The store's worker, from the pid its lock file holds (ended by id afterwards)."""
    try:
        text = (store / "worker.lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(app_root: Path, store: Path):
    """The app on `store`, started as `streamlit run app/main.py` in `app_root`; yields its
    process and URL; stops it and its worker afterwards."""
    port = free_port()
    env = {**os.environ, "E2VPT_STORE": str(store)}
    env.pop("E2VPT_AUTOSTART_WORKER", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=app_root, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the app did not answer its health check") from None
                time.sleep(0.5)
        yield server, url
    finally:
        server.terminate()
        server.wait(timeout=30)
        pid = worker_pid(store)
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, 15)
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)


def open_train_page(context, url: str):
    page = context.new_page()
    page.goto(url)
    page.get_by_role("heading", name="Train").wait_for(timeout=120_000)
    return page


def measure_cpu(app_root: Path, task: str, epochs: int, window: float) -> dict:
    """(a): server and browser CPU-seconds per minute while one tab follows training."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        subprocess.run([sys.executable, "-c", SUBMIT, str(store), task, str(epochs)],
                       cwd=app_root, check=True)
        with app_server(app_root, store) as (server, url), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = open_train_page(browser.new_context(viewport={"width": 1400,
                                                                 "height": 1400}), url)
            page.get_by_text("running: step").first.wait_for(timeout=300_000)
            time.sleep(5)  # past the first draws
            start, server0, browser0 = time.monotonic(), cpu_seconds(server.pid), \
                chromium_seconds()
            while time.monotonic() - start < window and jobs_left(store)[0]:
                time.sleep(1)
            elapsed = time.monotonic() - start
            server_s, browser_s = cpu_seconds(server.pid) - server0, \
                chromium_seconds() - browser0
            trained = jobs_left(store)[0] > 0
            browser.close()
    if not trained:
        raise RuntimeError("the run ended before the window did: raise --cpu-epochs")
    return {"part": "cpu", "seconds": round(elapsed, 1),
            "server_cpu_s_per_min": round(60 * server_s / elapsed, 2),
            "browser_cpu_s_per_min": round(60 * browser_s / elapsed, 2)}


def demo_headless(app_root: Path, task: str, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-c", HEADLESS, str(Path(tmp) / "runs"),
                                 task, str(epochs)], cwd=app_root, check=True,
                                capture_output=True, text=True)
        if jobs_left(Path(tmp) / "runs") != (0, 0):
            raise RuntimeError("a demo job failed (headless)")
    return float(result.stdout.split()[-1])


def demo_with_tabs(app_root: Path, epochs: int, tabs: int) -> float:
    """The demo through the app with `tabs` tabs following it (the demo's default task)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        with app_server(app_root, store) as (_, url), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1400})
            page = open_train_page(context, url)
            field = page.get_by_label("Demo epochs", exact=True).first
            field.fill(str(epochs))
            field.press("Enter")
            page.wait_for_timeout(1000)
            start = time.perf_counter()
            page.get_by_role("button", name="Run the quick demo").click()
            page.get_by_text("Queued the demo").wait_for(timeout=120_000)
            for _ in range(tabs - 1):
                open_train_page(context, url)
            while jobs_left(store)[0]:
                time.sleep(0.5)
            total = time.perf_counter() - start
            browser.close()
        if jobs_left(store)[1]:
            raise RuntimeError(f"a demo job failed or was cancelled ({tabs} tabs)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-root", type=Path, default=ROOT,
                        help="the checkout to measure (default: this one)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each condition")
    parser.add_argument("--tabs", default="0,1,2", help="tab counts for the demo (0: headless)")
    parser.add_argument("--epochs", type=int, help="demo epochs (default: the demo's)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of (a)")
    parser.add_argument("--cpu-epochs", type=int, default=40,
                        help="epochs of (a)'s training run: enough to outlast the window")
    parser.add_argument("--skip-cpu", action="store_true", help="skip (a)")
    parser.add_argument("--skip-demo", action="store_true", help="skip (b)")
    parser.add_argument("--results", type=Path, help="append each measurement as JSON")
    args = parser.parse_args()
    app_root = args.app_root.resolve()
    if not (app_root / "app" / "main.py").is_file():
        parser.error(f"{app_root} holds no app/main.py")
    sys.path.insert(0, str(app_root))
    from e2vpt_core.demo import DEMO_EPOCHS, DEMO_TASK

    epochs = args.epochs or DEMO_EPOCHS
    tab_counts = [int(count) for count in args.tabs.split(",")]

    def record(row: dict) -> None:
        row = {"app_root": str(app_root), **row}
        print(json.dumps(row), flush=True)
        if args.results:
            with args.results.open("a") as out:
                out.write(json.dumps(row) + "\n")

    if not args.skip_cpu:
        for _ in range(args.repeats):
            record(measure_cpu(app_root, DEMO_TASK, args.cpu_epochs, args.window))
    if args.skip_demo:
        return
    times: dict[int, list[float]] = {count: [] for count in tab_counts}
    for repeat in range(args.repeats):
        shift = repeat % len(tab_counts)
        for count in tab_counts[shift:] + tab_counts[:shift]:
            seconds = (demo_headless(app_root, DEMO_TASK, epochs) if count == 0
                       else demo_with_tabs(app_root, epochs, count))
            times[count].append(seconds)
            record({"part": "demo", "tabs": count, "epochs": epochs,
                    "seconds": round(seconds, 1)})
    if 0 in times:
        base = statistics.median(times[0])
        for count, values in times.items():
            print(f"{count} tab(s): median {statistics.median(values):.1f} s over "
                  f"{len(values)}, {statistics.median(values) / base:.2f}× headless")


if __name__ == "__main__":
    main()
