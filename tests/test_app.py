"""The Streamlit app renders and its parameter table follows the formulas (AppTest)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def _row(app, method):
    table = app.dataframe[0].value
    return table.set_index("method").loc[method]


def test_main_page_lists_every_method_with_its_budget():
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    assert "E²VPT" in app.title[0].value
    table = app.dataframe[0].value
    assert len(table) == 9
    assert _row(app, "e2vpt")["trainable params"] == 12 * 15 * 768 + 768 * 100 + 100
    assert _row(app, "vpt-deep")["trainable params"] == 12 * 10 * 768 + 768 * 100 + 100
    assert _row(app, "linear")["trainable params"] == 768 * 100 + 100


def test_prompt_length_slider_updates_the_table():
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.slider[0].set_value(50).run()
    assert not app.exception
    assert _row(app, "vpt-deep")["trainable params"] == 460_800 + 768 * 100 + 100
