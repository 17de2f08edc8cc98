"""Shared helpers of the AppTest suites: a private store per test, opening a page."""

from __future__ import annotations

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

from e2vpt_core.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def private_store(source: Path, tmp_path: Path, monkeypatch) -> RunStore:
    """A copy of a trained store, so one test's jobs and caches stay its own."""
    root = tmp_path / "store"
    shutil.copytree(source, root)
    monkeypatch.setenv("E2VPT_STORE", str(root))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(root)


def open_page(page: str | None = None) -> AppTest:
    """The app (on `pages/<page>` when given), checked to have rendered without an exception."""
    app = AppTest.from_file(APP, default_timeout=120).run()
    if page is not None:
        app.switch_page(f"../pages/{page}").run()
    assert not app.exception, app.exception
    return app


def by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)
