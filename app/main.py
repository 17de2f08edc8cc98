"""Streamlit entry point (`make run`): navigation over the pages in `pages/`, and the job
queue in the sidebar of every page.

The repository root goes on `sys.path` so pages import the shared `app.*` helpers however
Streamlit was started. Server settings (localhost only, no usage statistics) live in
`app/.streamlit/config.toml`, next to this script, where Streamlit reads them whatever
the working directory.

No page has an icon: the browser fetches a page's `:material/…:` icon (as the tab's
favicon) from Google's font CDN, which fails offline, and an emoji needs an emoji font the
machine may lack (headless Chromium draws boxes). The tab keeps Streamlit's own favicon,
served from localhost like everything else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.jobs_view import queue_sidebar  # noqa: E402
from app.state import get_store  # noqa: E402
from e2vpt_core.store import StoreError  # noqa: E402

PAGES = ROOT / "pages"

st.set_page_config(page_title="E²VPT toolkit", layout="wide")
navigation = st.navigation([
    st.Page(PAGES / "train.py", title="Train", default=True),
    st.Page(PAGES / "runs.py", title="Runs"),
    st.Page(PAGES / "budget.py", title="Parameter budget"),
    st.Page(PAGES / "pruning.py", title="Pruning"),
    st.Page(PAGES / "embeddings.py", title="Embeddings"),
])
try:
    with st.sidebar:
        redraw_queue = queue_sidebar(get_store())
    navigation.run()
    redraw_queue()  # the page may have queued or cancelled jobs: show them now
except StoreError as error:  # a damaged or unreadable store: one message, not a traceback
    st.error(str(error))
