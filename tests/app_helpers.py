"""Shared helpers of the AppTest suites: a private store per test, opening a page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

from e2vpt_core import PromptConfig
from e2vpt_core.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def train_tiny_e2vpt(root: Path, backbone: str) -> str:
    """A 1-epoch e2vpt run (4 visual and 2 key-value prompts, 4 segments) on the built-in
    `position` task in the store at `root`: what the Pruning-page suites inspect."""
    from e2vpt_core.train import TrainConfig, train_run

    config = TrainConfig(backbone=backbone, dataset="builtin:position", epochs=1,
                         batch_size=64, device="cpu",
                         prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                             num_segments=4))
    result = train_run(config, RunStore(root))
    assert result.status == "completed", result.reason
    return result.run_id


def private_store(source: Path, tmp_path: Path, monkeypatch) -> RunStore:
    """A copy of a trained store, so one test's jobs and caches stay its own."""
    root = tmp_path / "store"
    shutil.copytree(source, root)
    monkeypatch.setenv("E2VPT_STORE", str(root))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(root)


def empty_store(tmp_path: Path, monkeypatch) -> RunStore:
    """An empty store of the test's own, the app's; no worker is started for its jobs."""
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(tmp_path)


def open_page(page: str | None = None) -> AppTest:
    """The app (on `pages/<page>` when given), checked to have rendered without an exception."""
    app = AppTest.from_file(APP, default_timeout=120).run()
    if page is not None:
        app.switch_page(f"../pages/{page}").run()
    assert not app.exception, app.exception
    return app


def by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def set_prune_ratios(app: AppTest, token: float | None = None,
                     segment: float | None = None) -> AppTest:
    """Move the Pruning page's sliders (drawn in the browser, so set where the page keeps
    their values) for the selected run, and rerun."""
    run_id = by_label(app.selectbox, "Run").value
    if token is not None:
        app.session_state[f"token_ratio:{run_id}"] = token
    if segment is not None:
        app.session_state[f"segment_ratio:{run_id}"] = segment
    return app.run()


def mask_slider_data(app: AppTest) -> dict:
    """The data the Pruning page sent to its browser-side sliders."""
    element = next(e for e in app.main if getattr(e, "type", None) == "bidi_component"
                   and e.proto.component_name == "e2vpt.mask_slider")
    return json.loads(element.proto.json)
