"""The pruning figures: the trade-off chart (parent at 0, two panels, segment ratios,
random-mask controls) and the no-retrain curve (scores, reverse, random mean ± sd)."""

from __future__ import annotations

import pandas as pd
import pytest

from e2vpt_core.report import figures


def _empty(figure) -> bool:
    return not figure.data and figure.layout.annotations


def test_trade_off_puts_the_parent_at_zero_and_params_on_their_own_panel():
    results = pd.DataFrame({
        "ratio": [0.5, 0.3, 0.5, 0.5, 0.5], "segment_ratio": [0.0, 0.0, 0.25, 0.0, 0.0],
        "order": ["importance", None, "importance", "random", "random"],
        "accuracy": [70.0, 75.0, 65.0, 60.0, 50.0],
        "effective_params": [100, 140, 80, 100, 100]})
    figure = figures.prune_curve(results, {"accuracy": 80.0, "effective_params": 200})
    traces = {trace.name: trace for trace in figure.data}
    assert list(traces["parent (unpruned)"].x) == [0.0]
    assert list(traces["parent (unpruned)"].y) == [80.0]
    assert list(traces["parent params"].y) == [200] and traces["parent params"].yaxis == "y2"
    chosen = traces["scored masks, segments 0%"]
    assert list(chosen.x) == [0.3, 0.5] and list(chosen.y) == [75.0, 70.0]
    assert chosen.yaxis == "y" and traces["effective params, segments 0%"].yaxis == "y2"
    assert list(traces["scored masks, segments 25%"].y) == [65.0]
    random = traces["random masks (mean ± sd), segments 0%"]
    assert list(random.y) == [55.0] and list(random.customdata) == [2]
    assert random.error_y.array[0] == pytest.approx(pd.Series([60.0, 50.0]).std())
    assert "random masks (mean ± sd), segments 25%" not in traces
    assert list(figure.layout.yaxis.range) == [0, 100]
    assert figure.layout.yaxis.title.text == "test top-1 (%)"  # the split is named
    assert figures.prune_curve(results, None, "val").layout.yaxis.title.text == \
        "val top-1 (%)"
    assert figure.layout.yaxis2.rangemode == "tozero" and figure.layout.yaxis2.tickformat == ",d"
    assert list(figure.layout.xaxis2.range) == [-0.05, 0.95]
    assert figure.layout.xaxis2.title.text == "token prune ratio"


def test_trade_off_with_the_parent_alone_and_with_nothing():
    alone = figures.prune_curve(pd.DataFrame(), {"accuracy": 50.0, "effective_params": 10})
    assert [trace.name for trace in alone.data] == ["parent (unpruned)", "parent params"]
    assert _empty(figures.prune_curve(pd.DataFrame()))
    plain = figures.prune_curve(pd.DataFrame({"ratio": [0.5], "accuracy": [1.0],
                                              "effective_params": [3]}))
    assert [trace.name for trace in plain.data] == ["scored masks, segments 0%",
                                                    "effective params, segments 0%"]


def test_no_retrain_curve_draws_scores_reverse_and_random_band():
    rows = pd.DataFrame([
        {"order": order, "seed": seed, "token_ratio": ratio, "top1": top1}
        for order, seed, ratio, top1 in [
            ("importance", 0, 0.0, 90.0), ("importance", 0, 0.5, 80.0),
            ("reverse", 0, 0.0, 90.0), ("reverse", 0, 0.5, 20.0),
            ("random", 3, 0.0, 90.0), ("random", 3, 0.5, 40.0),
            ("random", 4, 0.0, 90.0), ("random", 4, 0.5, 60.0)]])
    figure = figures.no_retrain_curve(rows)
    traces = {trace.name: trace for trace in figure.data}
    assert list(traces["random (mean of 2)"].y) == [90.0, 50.0]
    band = traces["random ± sd"]
    sd = pd.Series([40.0, 60.0]).std()
    assert list(band.y) == pytest.approx([90.0, 50.0 + sd, 50.0 - sd, 90.0])
    assert list(traces["scores"].y) == [90.0, 80.0]
    assert list(traces["reverse (most important first)"].y) == [90.0, 20.0]
    assert list(figure.layout.yaxis.range) == [0, 100]
    assert figure.layout.yaxis.title.text == "val top-1 (%)"
    assert _empty(figures.no_retrain_curve(pd.DataFrame()))
