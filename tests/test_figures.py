"""Figures are pure functions: traces, axis titles, the data passed through, empty cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from e2vpt_core.report import figures


def _metrics(steps: int = 4, epochs: int = 2) -> pd.DataFrame:
    rows = [{"step": s, "epoch": (s - 1) * epochs // steps, "name": "train/loss",
             "value": 2.0 / s} for s in range(1, steps + 1)]
    rows += [{"step": s, "epoch": 0, "name": "train/lr", "value": 0.1 * s}
             for s in range(1, steps + 1)]
    rows += [{"step": (e + 1) * steps // epochs, "epoch": e, "name": "val/top1",
              "value": 50.0 + e} for e in range(epochs)]
    return pd.DataFrame(rows)


def _is_empty(figure) -> bool:
    return not figure.data and "no" in figure.layout.annotations[0].text


def test_training_curves_overlay_runs_with_one_legend_entry_each():
    figure = figures.training_curves({"run a": _metrics(), "run b": _metrics(6, 3)})
    assert len(figure.data) == 6
    loss_a = figure.data[0]
    assert loss_a.name == "run a" and list(loss_a.x) == [1, 2, 3, 4]
    assert list(loss_a.y) == pytest.approx([2.0, 1.0, 2 / 3, 0.5])
    top1_b = figure.data[5]
    assert list(top1_b.x) == [1, 2, 3] and list(top1_b.y) == [50.0, 51.0, 52.0]
    assert [trace.showlegend for trace in figure.data] == [True, False, False] * 2
    assert figure.data[0].line.color != figure.data[3].line.color
    assert figure.layout.xaxis.title.text == "step"
    assert figure.layout.yaxis3.title.text == "val top-1 (%)"
    assert figure.layout.xaxis3.title.text == "epoch"


def test_reference_lines_and_legend_names_are_drawn_as_given():
    figure = figures.training_curves({"<a href='http://evil'>x</a>": _metrics()},
                                     references={"chance": 12.5, "parent (val)": 60.0})
    notes = [note.text for note in figure.layout.annotations]
    assert "chance 12.5 %" in notes and "parent (val) 60.0 %" in notes
    assert figure.data[0].name == "&lt;a href='http://evil'&gt;x&lt;/a&gt;"  # no live link


def test_training_curves_without_data():
    assert _is_empty(figures.training_curves({}))
    assert _is_empty(figures.training_curves({"queued": pd.DataFrame()}))


def test_importance_figures_pass_scores_through():
    scores = np.arange(12.0).reshape(3, 4)
    heatmap = figures.importance_heatmap(scores)
    assert np.array_equal(np.asarray(heatmap.data[0].z), scores)
    assert heatmap.layout.xaxis.title.text == "segment"
    assert heatmap.layout.yaxis.title.text == "prompt token"
    bar = figures.token_importance_bar([0.5, 0.1, 0.9])
    assert list(bar.data[0].y) == [0.5, 0.1, 0.9] and list(bar.data[0].x) == [0, 1, 2]
    assert _is_empty(figures.importance_heatmap(np.zeros((0, 4))))
    assert _is_empty(figures.token_importance_bar([]))
    # scores are often ~1e-6: ticks read 3e-6, never plotly's SI "3µ"
    assert bar.layout.yaxis.exponentformat == "e"
    assert heatmap.data[0].colorbar.exponentformat == "e"
    layers = np.arange(6.0).reshape(2, 3)
    per_layer = figures.layer_importance_heatmap(layers)
    assert np.array_equal(np.asarray(per_layer.data[0].z), layers)
    assert list(per_layer.data[0].y) == [0, 1] and list(per_layer.data[0].x) == [0, 1, 2]
    assert per_layer.layout.yaxis.title.text == "layer"
    assert _is_empty(figures.layer_importance_heatmap(np.zeros((0, 3))))


def test_poincare_disk_draws_the_unit_circle_and_one_trace_per_class():
    disk = np.array([[0.1, 0.2], [-0.5, 0.3], [0.7, -0.1], [0.0, 0.9]])
    figure = figures.poincare_disk(disk, [0, 1, 0, 2], indices=[10, 11, 12, 13],
                                   class_names=["a", "b", "c"])
    circle, *classes = figure.data
    radius = np.hypot(np.asarray(circle.x), np.asarray(circle.y))
    assert np.allclose(radius, 1.0) and circle.mode == "lines"
    assert [trace.name for trace in classes] == ["a", "b", "c"]
    assert figures.poincare_disk(disk, [0, 0, 0, 0], title="**run** <b>x</b>").layout \
        .title.text == "**run** &lt;b&gt;x&lt;/b&gt;"
    assert list(classes[0].customdata) == [10, 12] and list(classes[0].x) == [0.1, 0.7]
    assert "sample %{customdata}" in classes[0].hovertemplate
    assert figure.layout.yaxis.scaleanchor == "x"
    empty = figures.poincare_disk(np.zeros((0, 2)), [])
    assert len(empty.data) == 1  # the circle alone


def test_group_curves_draw_the_seeds_mean_with_their_min_max_band():
    low, high = _metrics(), _metrics()
    high["value"] = high["value"] + 2.0  # the second seed: every figure 2 higher
    figure = figures.group_curves({"e2vpt": [low, high], "<b>one</b>": [_metrics()]},
                                  references={"chance": 25.0})
    bands = [trace for trace in figure.data if trace.fill == "toself"]
    lines = [trace for trace in figure.data if trace.fill != "toself"]
    assert len(bands) == 3 and len(lines) == 6  # a band per panel for the group only
    loss_band, loss_mean = figure.data[0], figure.data[1]
    assert list(loss_mean.x) == [1, 2, 3, 4]
    assert list(loss_mean.y) == pytest.approx([3.0, 2.0, 2 / 3 + 1, 1.5])
    assert list(loss_band.y) == pytest.approx([4.0, 3.0, 2 / 3 + 2, 2.5,
                                               0.5, 2 / 3, 1.0, 2.0])  # max, then min back
    assert loss_mean.name == "e2vpt (2 seeds)" and loss_mean.customdata[0] == [2.0, 4.0, 2]
    top1 = lines[2]
    assert list(top1.x) == [1, 2] and list(top1.y) == [51.0, 52.0]
    assert lines[3].name == "&lt;b&gt;one&lt;/b&gt; (1 seed)"  # escaped, labelled 1 seed
    assert [trace.showlegend for trace in lines] == [True, False, False] * 2
    assert "chance 25.0 %" in [note.text for note in figure.layout.annotations]
    assert figure.layout.yaxis3.title.text == "val top-1 (%)"
    assert _is_empty(figures.group_curves({"queued": [pd.DataFrame()]}))
