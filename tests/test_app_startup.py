"""How the app starts: localhost only and no usage statistics from any working directory
(issue 14), and no heavy import (umap, numba, scikit-learn, geoopt; torch and timm too on
the sidebar, the Train page and the Runs page) on pages that do not draw with them (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
HEAVY = ("umap", "numba", "sklearn", "geoopt", "pynndescent")

_VISIT_PAGES = f"""
import sys
from streamlit.testing.v1 import AppTest
app = AppTest.from_file({str(APP)!r}, default_timeout=120).run()
assert not app.exception, app.exception
for page in ("runs.py", "pruning.py", "embeddings.py", "budget.py"):
    app.switch_page(f"../pages/{{page}}").run()
    assert not app.exception, (page, app.exception)
print("heavy:", [name for name in {HEAVY!r} if name in sys.modules])
"""


@pytest.mark.slow
def test_no_page_imports_umap_numba_or_scikit_learn_on_its_first_render(tmp_path):
    env = {**os.environ, "E2VPT_STORE": str(tmp_path), "E2VPT_AUTOSTART_WORKER": "0"}
    result = subprocess.run([sys.executable, "-c", _VISIT_PAGES], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "heavy: []", result.stdout


_RUNS_PAGE = f"""
import sys
from streamlit.testing.v1 import AppTest
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig
store = RunStore(sys.argv[1])
run = store.create_run(TrainConfig(dataset="builtin:orientation").to_dict())
store.update_summary(run, num_classes=4, val_top1=61.5)
app = AppTest.from_file({str(APP)!r}, default_timeout=120)
app.switch_page("../pages/runs.py").run()
assert not app.exception, app.exception
assert [title.value for title in app.title] == ["Runs"], app.title
assert any("61.5" in str(frame.value) for frame in app.dataframe), app.dataframe
print("heavy:", [name for name in ("torch", "timm", *{HEAVY!r}) if name in sys.modules])
"""


_TRAIN_PAGE = f"""
import sys
from streamlit.testing.v1 import AppTest
app = AppTest.from_file({str(APP)!r}, default_timeout=120).run()
assert not app.exception, app.exception
assert [title.value for title in app.title] == ["Train"], app.title
task = next(box for box in app.selectbox if box.label == "Task")
assert task.value in ("counting", "digits", "distance", "orientation", "position", "texture")
assert len(task.options) == 6, task.options
print("heavy:", [name for name in ("torch", "timm", *{HEAVY!r}) if name in sys.modules])
"""


@pytest.mark.slow
@pytest.mark.parametrize("script", [_RUNS_PAGE, _TRAIN_PAGE], ids=["runs", "train"])
def test_the_sidebar_and_the_runs_and_train_pages_render_without_torch_or_timm(
        tmp_path, script):
    """Opened first (make run opens the Train page; a bookmark or reload the Runs page),
    these pages and the job queue beside them cost no torch import: the store, configs,
    run names, task and backbone names are plain data."""
    env = {**os.environ, "E2VPT_STORE": str(tmp_path), "E2VPT_AUTOSTART_WORKER": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "heavy: []", result.stdout


@pytest.mark.slow
def test_the_package_names_load_on_first_use():
    code = ("import sys, e2vpt_core, e2vpt_core.train\n"
            "assert 'torch' not in sys.modules\n"
            "from e2vpt_core import METHODS, PromptConfig, create_model, load_adapter\n"
            "from e2vpt_core.models import create_model as factory\n"
            "from e2vpt_core.train import train_run\n"
            "assert create_model is factory and 'torch' in sys.modules\n"
            "assert set(e2vpt_core.__all__) <= set(dir(e2vpt_core))\n"
            "print(sorted(e2vpt_core.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'PromptedViT'" in result.stdout and "'save_adapter'" in result.stdout
    import e2vpt_core

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        e2vpt_core.nothing  # noqa: B018


def test_the_settings_next_to_the_script_keep_the_app_local():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    settings = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost"
    assert settings["browser"]["gatherUsageStats"] is False


def test_no_icon_is_fetched_from_a_font_cdn(tmp_path, monkeypatch):
    """A `:material/…:` page icon becomes the tab's favicon, which the browser fetches from
    fonts.gstatic.com (offline: errors in the console), and an emoji needs an emoji font:
    no page has an icon, the tab keeps Streamlit's local favicon. (The browser test checks
    that no request leaves localhost.)"""
    import streamlit as st
    from app_helpers import open_page

    icons = []

    def recorded(original):
        def call(*args, **kwargs):
            icons.append(kwargs.get("icon", kwargs.get("page_icon")))
            return original(*args, **kwargs)
        return call

    monkeypatch.setattr(st, "Page", recorded(st.Page))
    monkeypatch.setattr(st, "set_page_config", recorded(st.set_page_config))
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    open_page()
    assert icons == [None] * 6  # the tab's and five pages'


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net")
def test_started_from_another_directory_the_app_listens_on_localhost_only(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "E2VPT_STORE": str(tmp_path / "runs"), "E2VPT_AUTOSTART_WORKER": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not answer its health check within 90 s")
        addresses = _listening(port)
        loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
        assert addresses and addresses <= loopback, addresses
    finally:
        server.kill()
        server.wait(timeout=30)
