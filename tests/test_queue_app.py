"""The queue in the app (AppTest): the sidebar is current right after a page queues jobs,
counts every queued job, shows names as text, and cancels all after a confirmation; the
Pruning page's sweep shows its cost and asks before queueing, leaving out queued ratios."""

from __future__ import annotations

import json

import pytest
from app_helpers import by_label, open_page, private_store, set_prune_ratios
from test_app_pruning import trained  # noqa: F401 (its tiny trained run, a fixture)

from app.names import NAME_KEY
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("E2VPT_STORE", str(tmp_path))
    monkeypatch.setenv("E2VPT_AUTOSTART_WORKER", "0")
    return RunStore(tmp_path)


def _sidebar(app) -> list[str]:
    return [element.value for element in (*app.sidebar.markdown, *app.sidebar.text,
                                          *app.sidebar.caption)]


def _embeds(store: RunStore, count: int) -> list[int]:
    run = store.create_run(TrainConfig(dataset="builtin:position").to_dict(),
                           status="completed")
    return [store.enqueue_job("embed", {"runs": [run], "split": "test",
                                        "options": {"max_points": points}})[0]
            for points in range(1, count + 1)]


def test_the_sidebar_shows_the_jobs_the_page_just_queued(store):
    """It was drawn before the page ran, so it said "Nothing running or queued" right after
    the demo was queued."""
    app = open_page()
    assert "Nothing running or queued." in _sidebar(app)
    by_label(app.button, "Run the quick demo").click().run()
    assert not app.exception, app.exception
    assert len(store.jobs()) == 5
    assert "**Queued (5)**" in _sidebar(app)
    assert "Nothing running or queued." not in _sidebar(app)


def test_the_sidebar_counts_and_lists_every_queued_job(store):
    _embeds(store, 10)
    app = open_page("runs.py")
    lines = _sidebar(app)
    assert "**Queued (10)**" in lines
    assert sum(line.startswith(tuple(f"{n}. embed" for n in range(1, 11))) for line in lines) \
        == 10


def test_names_are_shown_as_text_never_as_markdown(store):
    evil = "[x](http://evil.example)"
    run = store.create_run(TrainConfig(dataset="builtin:position").to_dict())
    store.update_summary(run, **{NAME_KEY: evil})
    store.enqueue_job("train", {}, run_id=run)
    failed = store.enqueue_job("embed", {"runs": [run], "split": "test", "options": {}})[0]
    store.finish_job(failed, "failed", "**boom** [y](http://evil.example)")
    app = open_page()
    assert f"1. train {evil}" in [text.value for text in app.sidebar.text]
    assert any(evil in text.value and "**boom**" in text.value for text in app.sidebar.text)
    assert not any("evil" in markdown.value for markdown in app.sidebar.markdown)


def test_cancel_all_asks_first_then_cancels_the_jobs_it_listed(store):
    jobs = _embeds(store, 3)
    app = open_page()
    app.sidebar.button(key="cancel-all").click().run()
    assert "Cancel 3 jobs?" in app.sidebar.warning[0].value
    assert set(store.jobs()["status"]) == {"queued"}
    app.sidebar.button(key="cancel-all-no").click().run()
    assert not app.sidebar.warning or "Cancel" not in app.sidebar.warning[0].value
    assert set(store.jobs()["status"]) == {"queued"}
    app.sidebar.button(key="cancel-all").click().run()
    late = _embeds(store, 1)[0]  # queued after the question: not among the cancelled
    app.sidebar.button(key="cancel-all-yes").click().run()
    statuses = store.jobs().set_index("id")["status"]
    assert list(statuses[jobs]) == ["cancelled"] * 3 and statuses[late] == "queued"
    assert "**Queued (1)**" in _sidebar(app)


def _ratios(store: RunStore) -> list[float]:
    jobs = store.jobs()
    return [json.loads(payload)["token_ratio"]
            for payload in jobs[jobs["status"] == "queued"]["payload"]]


def test_the_sweep_shows_its_cost_and_asks_before_queueing(trained, tmp_path,  # noqa: F811
                                                           monkeypatch):
    store = private_store(trained[0], tmp_path, monkeypatch)
    app = open_page("pruning.py")
    set_prune_ratios(app, token=0.5)
    by_label(app.button, "Rewind").click().run()
    assert _ratios(store) == [0.5]
    by_label(app.button, "Sweep 10–90 %").click().run()
    assert _ratios(store) == [0.5]  # nothing queued before the confirmation
    warning = next(w.value for w in app.warning if w.value.startswith("Sweep: "))
    assert warning.startswith("Sweep: 8 rewinds × 1 epoch ≈ ")
    assert warning.endswith("1 ratio(s) already queued, left out.")
    by_label(app.button, "Don't sweep").click().run()
    assert _ratios(store) == [0.5] and not any(w.value.startswith("Sweep") for w in app.warning)
    by_label(app.button, "Sweep 10–90 %").click().run()
    by_label(app.button, "Queue 8 rewinds").click().run()
    assert not app.exception and not app.error
    assert sorted(_ratios(store)) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert "**Queued (9)**" in _sidebar(app)
    by_label(app.button, "Cancel them").click().run()
    assert _ratios(store) == [] and set(store.jobs()["status"]) == {"cancelled"}
