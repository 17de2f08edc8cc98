"""The Pruning page's verdicts (AppTest, a real tiny run): under the no-retrain curve at
the sliders' ratio, and beside the rewind chart once random-mask rewinds exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import by_label, open_page, private_store, set_prune_ratios, train_tiny_e2vpt

from e2vpt_core.prune import rewind_run
from e2vpt_core.prune.controls import curve_verdicts
from e2vpt_core.prune.importance import compute_run_importance
from e2vpt_core.prune.rewind import run_curve
from e2vpt_core.stats import compare_to_draws
from e2vpt_core.store import RunStore


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> tuple[Path, str]:
    """One tiny e2vpt run (4 tokens × 4 segments) with its full-pass scores."""
    root = tmp_path_factory.mktemp("verdict-store")
    run_id = train_tiny_e2vpt(root, tiny_backbone)
    compute_run_importance(RunStore(root), run_id)
    return root, run_id


@pytest.fixture
def store(trained, tmp_path, monkeypatch) -> RunStore:
    return private_store(trained[0], tmp_path, monkeypatch)


def _texts(app) -> list[str]:
    return [element.value for element in app.markdown]


def test_the_curve_says_at_the_nearest_computed_ratio_whether_scores_beat_random(
        store, trained):
    curve = run_curve(store, trained[1], [0.0, 0.75], draws=5)
    app = open_page("pruning.py")
    by_label(app.selectbox, "Run").set_value(trained[1]).run()
    set_prune_ratios(app, token=0.5)  # not computed: 0.75 is the nearest ratio
    assert not app.exception, app.exception
    expected = [v.text() for v in curve_verdicts(curve) if v.token_ratio == 0.75]
    shown = [text for text in _texts(app) if text.startswith("at ")]
    assert shown == expected and len(shown) == 2
    assert shown[0].startswith("at 75 % of tokens pruned, importance keeps ")
    assert shown[1].startswith("at 75 % of tokens pruned, the reverse order keeps ")
    assert all(" % val against " in text and "(5 draws)" in text for text in shown)
    assert any("on val, without retraining" in caption.value for caption in app.caption)
    table = next(e for e in app.expander if e.label == "Verdict at every ratio").dataframe[0]
    assert list(table.value["token_ratio"]) == [0.0, 0.0, 0.75, 0.75]


def test_the_rewind_chart_says_whether_importance_rewinds_beat_random_ones(store, trained):
    chosen = rewind_run(store, trained[1], 0.5, epochs=1)
    app = open_page("pruning.py")
    by_label(app.selectbox, "Run").set_value(trained[1]).run()
    assert any("once a rewound ratio has random-mask rewinds" in c.value for c in app.caption)
    assert not any("importance keeps" in text for text in _texts(app))

    controls = [rewind_run(store, trained[1], 0.5, epochs=1, order="random", seed=seed)
                for seed in (0, 1, 2)]
    assert all(c.status == "completed" for c in controls + [chosen])
    app = open_page("pruning.py")
    by_label(app.selectbox, "Run").set_value(trained[1]).run()
    assert not app.exception, app.exception
    val = [store.get_run(c.run_id)["summary"]["val_top1"] for c in controls]
    expected = compare_to_draws(store.get_run(chosen.run_id)["summary"]["val_top1"], val,
                                split="val")
    [shown] = [text for text in _texts(app) if "importance keeps" in text]
    assert shown == (f"at 50 % of tokens pruned (fresh init, zero mode, 1 epoch, mask "
                     f"scores), {expected.sentence}")
    assert " % val against " in shown and "(3 draws)" in shown
    assert any("on val (the split a sweep picks its ratio on" in c.value for c in app.caption)
