"""The Runs page's "Download report": the engine's HTML report of the runs (and seed
groups) on screen, built only when the button is clicked.

The page never fits UMAP in a script run, so the report draws only Poincaré disks already
stored (the Embeddings page queues them).
"""

from __future__ import annotations

import streamlit as st

from e2vpt_core.store import RunStore

LABEL = "Download report (.html)"


def report_button(store: RunStore, ids: list[str]) -> None:
    """A download of the report of `ids` (run or seed-group ids, at least one), made on
    click."""
    def build() -> bytes:
        from e2vpt_core.report.html import report_html  # plotly.js and scipy: on click only

        return report_html(store, ids, compute_disks=False).encode()

    st.download_button(LABEL, build, file_name=f"e2vpt-report-{ids[0]}.html",
                       mime="text/html", on_click="ignore",
                       key=f"report-{'-'.join(ids)}",
                       help="one HTML file that opens offline: final table, curves, "
                            "trade-off, stored disks, configs, commands, environment")
