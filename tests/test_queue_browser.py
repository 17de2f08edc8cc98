"""The sidebar queue in a real browser: current the moment the demo is queued, redrawing
itself as the worker moves on, and "Cancel all" with its confirmation. Slow: a Streamlit
server and Debian's chromium, as in test_browser.py (whose server fixture it shares)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_browser import CHROMIUM, _page, _start_with_epochs, _wait_until, app_url  # noqa: F401

from e2vpt_core.store import RunStore

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian chromium is not installed (make test installs it)")]


def test_the_sidebar_is_current_redraws_itself_and_cancels_all(app_url, tmp_path):  # noqa: F811
    store = RunStore(tmp_path / "runs")
    with _page() as page:
        # 20 epochs: the first run must still train when the queue (redrawn every 10 s)
        # shows it running and Cancel all is pressed; a cancel stops it at its next step
        _start_with_epochs(page, app_url, "Run the quick demo", "Demo epochs", 20)
        page.get_by_text("Queued the demo").wait_for(timeout=30_000)
        sidebar = page.get_by_test_id("stSidebar")
        # the script run that queued it redraws it, not its own redraw 2 s later
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
            timeout=30_000)
        assert "importance of" in sidebar.inner_text()
        assert "Nothing running or queued" not in sidebar.inner_text()
        _wait_until(lambda: "Running" in sidebar.inner_text(), 120,
                    "the sidebar to show the worker's first job, nothing clicked")
        page.get_by_role("button", name="Cancel all").click()
        page.get_by_role("button", name="Yes, cancel them").wait_for(timeout=10_000)
        assert len(store.jobs()[store.jobs()["status"] == "cancelled"]) == 0
        page.get_by_role("button", name="Yes, cancel them").click()
        _wait_until(lambda: "Nothing running or queued" in sidebar.inner_text(), 180,
                    "the queue to empty after Cancel all")
        assert set(store.jobs()["status"]) == {"cancelled"}
