"""Every figure of the app: pure functions from data to a plotly Figure.

No Streamlit here, so pages stay thin and each figure is unit-tested without a browser.
Metrics frames are the run store's long format (`step`, `epoch`, `name`, `value`). Every
accuracy axis names its split; user text (run and class names) is escaped, since plotly
reads tags such as `<a href>` in names and titles.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LOSS, LR, VAL_TOP1 = "train/loss", "train/lr", "val/top1"


def _empty(title: str, message: str = "no data yet") -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False},
                         annotations=[{"text": message, "showarrow": False,
                                       "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}])
    return figure


def _text(text: object) -> str:
    """User text as plotly shows it literally (no link, no bold)."""
    return html.escape(str(text), quote=False)


def _series(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    if metrics.empty:
        return metrics
    return metrics[metrics["name"] == name].sort_values("step")


def training_curves(runs: Mapping[str, pd.DataFrame],
                    references: Mapping[str, float] | None = None) -> go.Figure:
    """Loss and lr per step, val top-1 per epoch; one colour per run so runs overlay.

    `references` (label → top-1 %: chance, and the linear probe and parent on val, named
    so: `context.labelled_references(runs, run, "val")`) are dotted lines on the top-1
    panel, so an accuracy is never read without what it should beat."""
    if not any(not frame.empty for frame in runs.values()):
        return _empty("Training curves")
    figure = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Learning rate",
                                                           "Validation top-1"))
    for index, (label, metrics) in enumerate(runs.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        for column, name in enumerate((LOSS, LR, VAL_TOP1), start=1):
            series = _series(metrics, name)
            x = series["epoch"] + 1 if name == VAL_TOP1 else series["step"]
            figure.add_trace(go.Scatter(
                x=list(x), y=list(series["value"]), name=_text(label), legendgroup=label,
                showlegend=column == 1, line={"color": colour},
                mode="lines+markers" if name == VAL_TOP1 else "lines"), row=1, col=column)
    _curve_axes(figure, references)
    figure.update_layout(title="Training curves", legend_title_text="run")
    return figure


def _curve_axes(figure: go.Figure, references: Mapping[str, float] | None) -> None:
    """Axis titles of the three curve panels, and the reference lines on top-1's."""
    for column, (x_title, y_title) in enumerate(
            (("step", "loss"), ("step", "lr"), ("epoch", "val top-1 (%)")), start=1):
        figure.update_xaxes(title_text=x_title, row=1, col=column)
        figure.update_yaxes(title_text=y_title, row=1, col=column)
    for name, value in (references or {}).items():
        figure.add_hline(y=value, row=1, col=3, line={"dash": "dot", "color": "grey"},
                         annotation_text=f"{name} {value:.1f} %",
                         annotation_position="bottom right")


def _band_stats(members: Sequence[pd.DataFrame], name: str) -> pd.DataFrame:
    """Mean, min, max and count over a group's runs of one metric, by x (the epoch, from 1,
    for val top-1; else the step)."""
    frames = []
    for metrics in members:
        series = _series(metrics, name)
        if not series.empty:
            x = series["epoch"] + 1 if name == VAL_TOP1 else series["step"]
            frames.append(pd.DataFrame({"x": list(x), "value": list(series["value"])}))
    if not frames:
        return pd.DataFrame(columns=["mean", "min", "max", "count"])
    return pd.concat(frames).groupby("x")["value"].agg(["mean", "min", "max", "count"])


def _rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def group_curves(groups: Mapping[str, Sequence[pd.DataFrame]],
                 references: Mapping[str, float] | None = None) -> go.Figure:
    """Seed groups' training curves: each group's mean over its seeds (loss and lr per
    step, val top-1 per epoch) with the seeds' min–max shaded around it, so the spread a
    single seed hides is seen; the hover gives the min, max and seeds at each point. A
    group of one run is its plain line, labelled "1 seed". `references` as in
    `training_curves`."""
    if not any(not metrics.empty for members in groups.values() for metrics in members):
        return _empty("Training curves over seeds")
    figure = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Learning rate",
                                                           "Validation top-1"))
    for index, (label, members) in enumerate(groups.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        name = f"{_text(label)} ({len(members)} seed{'s' if len(members) != 1 else ''})"
        for column, metric in enumerate((LOSS, LR, VAL_TOP1), start=1):
            stats = _band_stats(members, metric)
            x = list(stats.index)
            if len(members) > 1 and x:
                figure.add_trace(go.Scatter(
                    x=x + x[::-1], y=list(stats["max"]) + list(stats["min"])[::-1],
                    fill="toself", mode="lines", line={"width": 0}, hoverinfo="skip",
                    fillcolor=_rgba(colour, 0.2), legendgroup=label, showlegend=False,
                    name=f"{name} min–max"), row=1, col=column)
            figure.add_trace(go.Scatter(
                x=x, y=list(stats["mean"]), name=name, legendgroup=label,
                showlegend=column == 1, line={"color": colour},
                customdata=stats[["min", "max", "count"]].to_numpy().tolist(),
                hovertemplate="%{y:.3g} (min %{customdata[0]:.3g}, max %{customdata[1]:.3g}"
                              ", n = %{customdata[2]})<extra></extra>",
                mode="lines+markers" if metric == VAL_TOP1 else "lines"), row=1, col=column)
    _curve_axes(figure, references)
    figure.update_layout(title="Training curves over seeds (mean, min–max shaded)",
                         legend_title_text="group")
    return figure


def importance_heatmap(segment_scores: np.ndarray | Sequence[Sequence[float]]) -> go.Figure:
    """Segment importance, prompt tokens × segments (rows are tokens)."""
    scores = np.asarray(segment_scores, dtype=float)
    if scores.size == 0:
        return _empty("Segment importance", "no importance scores")
    figure = go.Figure(go.Heatmap(
        z=scores, x=list(range(scores.shape[1])), y=list(range(scores.shape[0])),
        colorscale="Viridis", colorbar=_SCORE_BAR,
        hovertemplate="token %{y}, segment %{x}: %{z:.3g}<extra></extra>"))
    figure.update_layout(title="Segment importance", xaxis_title="segment",
                         yaxis_title="prompt token", yaxis={"autorange": "reversed"})
    return figure


def layer_importance_heatmap(layer_scores: np.ndarray | Sequence[Sequence[float]]) -> go.Figure:
    """Per-layer token importance, prompt layers × tokens (rows are layers)."""
    scores = np.asarray(layer_scores, dtype=float)
    title = "Token importance per layer (sum over segments)"
    if scores.size == 0:
        return _empty(title, "no per-layer scores")
    figure = go.Figure(go.Heatmap(
        z=scores, x=list(range(scores.shape[1])), y=list(range(scores.shape[0])),
        colorscale="Viridis", colorbar=_SCORE_BAR,
        hovertemplate="layer %{y}, token %{x}: %{z:.3g}<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="prompt token", yaxis_title="layer",
                         yaxis={"autorange": "reversed"})
    return figure


def token_importance_bar(token_scores: np.ndarray | Sequence[float]) -> go.Figure:
    """One bar per prompt token."""
    scores = np.asarray(token_scores, dtype=float).ravel()
    if scores.size == 0:
        return _empty("Token importance", "no importance scores")
    figure = go.Figure(go.Bar(x=list(range(scores.size)), y=scores,
                              hovertemplate="token %{x}: %{y:.3g}<extra></extra>"))
    figure.update_layout(title="Token importance", xaxis_title="prompt token",
                         yaxis={"title": "importance", **_SCIENTIFIC})
    return figure


def prune_curve(results: pd.DataFrame, parent: Mapping[str, float] | None = None,
                split: str = "test") -> go.Figure:
    """Rewound runs: top-1 (upper panel) and effective parameters (lower panel, so neither
    marker hides the other) against the token prune ratio; one colour per segment ratio,
    the unpruned parent at ratio 0, and random-mask rewinds (mean ± sd over their seeds)
    beside the chosen masks.

    Columns: `ratio`, `accuracy`, `effective_params`, optional `segment_ratio` and
    `order` (`random` marks the controls); `parent`: its `accuracy` and
    `effective_params`; every accuracy is the `split` top-1."""
    if results.empty and parent is None:
        return _empty("Pruning trade-off", "no rewinds yet")
    results = results.assign(
        segment_ratio=results.get("segment_ratio", pd.Series(0.0, index=results.index))
        .fillna(0.0),
        order=results.get("order", pd.Series("importance", index=results.index))
        .fillna("importance"))
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                           vertical_spacing=0.06)
    if parent is not None:
        for row, key, text, name in ((1, "accuracy", "%{y:.1f} %", "parent (unpruned)"),
                                     (2, "effective_params", "%{y:,}", "parent params")):
            figure.add_trace(go.Scatter(
                x=[0.0], y=[parent[key]], name=name, mode="markers",
                marker={"symbol": "star", "size": 14, "color": "black"}, showlegend=row == 1,
                legendgroup="parent", hovertemplate=f"parent: {text}<extra></extra>"),
                row=row, col=1)
    for index, (segment_ratio, group) in enumerate(results.groupby("segment_ratio")):
        colour = _COLOURS[index % len(_COLOURS)]
        label = f"segments {segment_ratio:.0%}"
        chosen = group[group["order"] != "random"].sort_values("ratio")
        where = f"tokens %{{x:.0%}} / {label}"
        figure.add_trace(go.Scatter(
            x=list(chosen["ratio"]), y=list(chosen["accuracy"]), name=f"scored masks, {label}",
            mode="lines+markers", line={"color": colour}, legendgroup=label,
            hovertemplate=f"{where}: %{{y:.1f}} %<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(
            x=list(chosen["ratio"]), y=list(chosen["effective_params"]), showlegend=False,
            name=f"effective params, {label}", mode="lines+markers", legendgroup=label,
            line={"color": colour, "dash": "dot"}, marker={"symbol": "square"},
            hovertemplate=f"{where}: %{{y:,}} params<extra></extra>"), row=2, col=1)
        random = group[group["order"] == "random"]
        if not random.empty:
            stats = random.groupby("ratio")["accuracy"].agg(["mean", "std", "count"])
            figure.add_trace(go.Scatter(
                x=list(stats.index), y=list(stats["mean"]), mode="markers",
                error_y={"type": "data", "array": list(stats["std"].fillna(0.0))},
                name=f"random masks (mean ± sd), {label}", legendgroup=label,
                marker={"symbol": "x", "size": 10, "color": colour},
                customdata=list(stats["count"]),
                hovertemplate=f"random, {where}: %{{y:.1f}} % over %{{customdata}} "
                              "seeds<extra></extra>"), row=1, col=1)
    figure.update_xaxes(range=[-0.05, 0.95], tickformat=".0%")
    figure.update_xaxes(title_text="token prune ratio", row=2, col=1)
    figure.update_yaxes(title_text=f"{split} top-1 (%)", range=[0, 100], row=1, col=1)
    figure.update_yaxes(title_text="effective parameters", rangemode="tozero",
                        tickformat=",d", row=2, col=1)
    figure.update_layout(title=f"Pruning trade-off ({split} top-1)",
                         legend={"groupclick": "togglegroup"})
    return figure


def no_retrain_curve(rows: pd.DataFrame, split: str = "val") -> go.Figure:
    """The parent's top-1 without retraining against the token prune ratio: the scores'
    order, the reverse order, and random orders as mean ± sd over their draws.

    Columns: `order`, `seed`, `token_ratio`, `top1` (on `split`)."""
    title = "Accuracy without retraining"
    if rows.empty:
        return _empty(title, "not computed yet")
    figure = go.Figure()
    random = rows[rows["order"] == "random"].groupby("token_ratio")["top1"]
    if len(random):
        stats = random.agg(["mean", "std"]).fillna(0.0)
        x = list(stats.index)
        draws = rows[rows["order"] == "random"]["seed"].nunique()
        figure.add_trace(go.Scatter(
            x=x + x[::-1], y=list(stats["mean"] + stats["std"])
            + list((stats["mean"] - stats["std"])[::-1]), fill="toself", mode="lines",
            line={"width": 0}, fillcolor="rgba(127,127,127,0.25)", hoverinfo="skip",
            name="random ± sd"))
        figure.add_trace(go.Scatter(x=x, y=list(stats["mean"]), mode="lines+markers",
                                    name=f"random (mean of {draws})",
                                    line={"color": "grey", "dash": "dash"}))
    for order, name, colour in (("importance", "scores", "#2ca02c"),
                                ("reverse", "reverse (most important first)", "#d62728")):
        line = rows[rows["order"] == order].sort_values("token_ratio")
        if not line.empty:
            figure.add_trace(go.Scatter(x=list(line["token_ratio"]), y=list(line["top1"]),
                                        mode="lines+markers", name=name,
                                        line={"color": colour}))
    figure.update_layout(title=title, xaxis={"title": "token prune ratio", "tickformat": ".0%",
                                             "range": [-0.05, 0.95]},
                         yaxis={"title": f"{split} top-1 (%)", "range": [0, 100]})
    return figure


def poincare_disk(disk: np.ndarray, labels: Sequence[int] | np.ndarray,
                  indices: Sequence[int] | np.ndarray | None = None,
                  class_names: Sequence[str] | None = None, title: str = "Poincaré disk",
                  ) -> go.Figure:
    """Points in the unit disk, one trace per class, with the boundary circle drawn."""
    points = np.asarray(disk, dtype=float).reshape(-1, 2)
    labels = np.asarray(labels).ravel()
    indices = np.arange(len(points)) if indices is None else np.asarray(indices).ravel()
    angle = np.linspace(0.0, 2 * np.pi, 361)
    figure = go.Figure(go.Scatter(x=np.cos(angle), y=np.sin(angle), mode="lines",
                                  name="unit circle", line={"color": "black", "width": 1},
                                  hoverinfo="skip", showlegend=False))
    for label in np.unique(labels):
        chosen = labels == label
        name = _text(class_names[int(label)]) if class_names is not None else f"class {label}"
        figure.add_trace(go.Scatter(
            x=points[chosen, 0], y=points[chosen, 1], mode="markers", name=name,
            marker={"size": 5}, customdata=indices[chosen],
            hovertemplate=f"{name}<br>sample %{{customdata}}<extra></extra>"))
    axis = {"range": [-1.05, 1.05], "zeroline": False, "showgrid": False}
    figure.update_layout(title=_text(title), xaxis=axis, yaxis={**axis, "scaleanchor": "x"},
                         legend_title_text="class")
    return figure


# Scores are often ~1e-6: plotly's default SI suffixes would read "3µ"; say 3e-6.
_SCIENTIFIC = {"exponentformat": "e", "showexponent": "all"}
_SCORE_BAR = {"title": "score", **_SCIENTIFIC}
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")
