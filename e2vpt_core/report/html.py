"""The shareable HTML report: one self-contained file a researcher can send.

For the runs and seed groups asked for it holds the final table (val / test top-1 beside
chance and the linear probe, each group's mean ± sd), the training curves, the pruning
trade-off of pruned runs, the Poincaré disks of a pair of runs, each run's config and the
commands that reproduce it, and the environment. Figures are `figures`' functions
exported by plotly itself, with plotly.js inlined once: the file opens offline, with no
server. Nothing is written into the store, except a disk `disk_views` computes and caches
as `e2vpt embed` does.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..fileio import atomic_write
from ..stats import summarize
from ..store import RunStore
from ..store.groups import group_members, group_names
from ..store.names import run_names
from . import environment, figures
from .commands import group_command, run_commands
from .context import class_names, labelled_references, overlay_references
from .tradeoff import pruned_parents, trade_off
from .views import disk_views

SPLITS = ("val", "test")


@dataclass(frozen=True)
class Subject:
    """What one argument named: a run, or a seed group and its member runs."""

    given: str
    run_ids: tuple[str, ...]
    group: bool


def resolve(store: RunStore, ids: list[str]) -> list[Subject]:
    """Each id as a run of the store, else as a seed group (`store.groups`); an id that is
    neither is a ValueError naming it, raised before anything is read or written."""
    if not ids:
        raise ValueError("name at least one run or seed group")
    known = set(store.runs()["id"])
    subjects = []
    for given in ids:
        if given in known:
            subjects.append(Subject(given, (given,), False))
            continue
        try:
            members = [run for run in group_members(store, given) if run in known]
        except (KeyError, ValueError):
            members = []
        if not members:
            raise ValueError(f"{given!r} is neither a run nor a seed group in store "
                             f"{store.root}")
        subjects.append(Subject(given, tuple(members), True))
    return subjects


def check_target(store: RunStore, out: Path, force: bool) -> None:
    """Refuse a report path inside the store, a folder, or (without `force`) a file."""
    if store.contains(out):
        raise ValueError(f"{out} is inside the run store {store.root}; a report is written "
                         "only outside it, --force or not")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; name the report's file, e.g. {out}/report.html")
    if (out.exists() or out.is_symlink()) and not force:
        raise ValueError(f"{out} exists; choose a new path, or pass --force to overwrite it")


def write_report(store: RunStore, ids: list[str], out: Path, force: bool = False,
                 **options: Any) -> int:
    """Write the report of `ids` to `out` atomically (options: `report_html`'s); its size
    in bytes. Every check runs before the report is built, and nothing is written when
    one fails."""
    check_target(store, out, force)
    text = report_html(store, ids, **options).encode()
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(text))
    return len(text)


def report_html(store: RunStore, ids: list[str], compute_disks: bool = True,
                disk_split: str = "test", log: Callable[[str], None] | None = None) -> str:
    """The report of the runs and seed groups `ids` as one HTML document. Two runs get
    their Poincaré disks on `disk_split`: stored ones, else computed when
    `compute_disks` (announced through `log`), else a line saying how to compute them."""
    subjects = resolve(store, ids)
    run_ids = list(dict.fromkeys(run for subject in subjects for run in subject.run_ids))
    runs = store.runs()
    names = _unique_names(run_names(runs), run_ids)
    plots = _Plots()
    body = [f"<h1>E²VPT report: {_e(', '.join(s.given for s in subjects))}</h1>",
            _contents(len(run_ids) == 2),
            _section("results", "Final results", _results(runs, run_ids, names, subjects)),
            _section("curves", "Training curves", _curves(store, runs, run_ids, names, plots)),
            _section("pruning", "Pruning trade-off", _pruning(runs, run_ids, names, plots))]
    if len(run_ids) == 2:
        views = disk_views(store, run_ids, disk_split, compute_disks, log)
        body.append(_section("disks", f"Poincaré disks ({disk_split})",
                             _disks(runs, views, names, disk_split, plots)))
    body += [_section("runs", "Runs: configs and the commands that reproduce them",
                      "".join([*(_group(store, s) for s in subjects if s.group),
                               *(_run(store, run_id, names) for run_id in run_ids)])),
             _section("environment", "Environment", _environment(store, run_ids, names))]
    return _PAGE.format(title=_e("E²VPT report: " + ", ".join(s.given for s in subjects)),
                        body="\n".join(body))


class _Plots:
    """plotly's own HTML export of each figure; plotly.js inlined with the first only.

    Each figure gets plotly's own template: in the app, Streamlit's is the default, and
    its colours are placeholders only Streamlit's frontend fills in (all near-black)."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, figure: go.Figure, height: int = 460) -> str:
        self.count += 1
        figure = go.Figure(figure).update_layout(template="plotly")
        return figure.to_html(full_html=False, include_plotlyjs=self.count == 1,
                              div_id=f"figure-{self.count}", default_height=f"{height}px",
                              config={"displaylogo": False})


def _e(text: object) -> str:
    return html.escape(str(text))


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>\n{content}\n</section>'


def _contents(disks: bool) -> str:
    parts = [("results", "final results"), ("curves", "training curves"),
             ("pruning", "pruning trade-off"), *([("disks", "Poincaré disks")] if disks else []),
             ("runs", "configs and commands"), ("environment", "environment")]
    return "<nav>" + " · ".join(f'<a href="#{a}">{t}</a>' for a, t in parts) + "</nav>"


def _unique_names(names: dict[str, str], run_ids: list[str]) -> dict[str, str]:
    """Run names as labels: a name two runs share (seeds of a group) gets the id beside it."""
    shown = [names.get(run_id, run_id) for run_id in run_ids]
    return {run_id: name if shown.count(name) == 1 else f"{name} · {run_id}"
            for run_id, name in zip(run_ids, shown, strict=True)}


def _number(value: Any, digits: int = 2) -> str:
    """A figure to `digits` decimals (0: a count with thousands separators); missing: –."""
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}f}" if digits else f"{float(value):,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped text or a formatted number)."""
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                    for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _results(runs: pd.DataFrame, run_ids: list[str], names: dict[str, str],
             subjects: list[Subject]) -> str:
    table = runs.set_index("id")
    references = {run_id: {**labelled_references(runs, run_id, "val"),
                           **labelled_references(runs, run_id, "test")} for run_id in run_ids}
    extra = list(dict.fromkeys(label for found in references.values() for label in found))
    header = ["run", "id", "kind", "method", "task", "status", "val top-1", "test top-1",
              *extra, "trainable params", "effective params"]
    rows = []
    for run_id in run_ids:
        row = table.loc[run_id]
        rows.append([_e(names[run_id]), _e(run_id), _e(row["kind"]), _e(row["method"]),
                     _e(row["dataset"]), _e(row["status"]),
                     *(_number(row.get(f"{split}_top1")) for split in SPLITS),
                     *(_number(references[run_id].get(label)) for label in extra),
                     *(_number(row.get(c), 0) for c in ("trainable_params", "effective_params"))])
    text = ("<p>Top-1 in %. Chance is 100 / classes; the linear probe is the best completed "
            "one on the same task and backbone, on the split it names.</p>" + _table(header, rows))
    groups = [subject for subject in subjects if subject.group]
    if groups:
        labels = group_names(runs)
        text += "<h3>Seed groups (mean ± sd over the members' seeds)</h3>" + _table(
            ["group", "id", "runs", "val top-1", "test top-1"],
            [[_e(labels.get(group.given, group.given)), _e(group.given),
              _e(", ".join(group.run_ids)),
              *(_spread(table, group.run_ids, split) for split in SPLITS)] for group in groups])
    return text


def _spread(table: pd.DataFrame, run_ids: tuple[str, ...], split: str) -> str:
    column = f"{split}_top1"
    values = [table.at[run_id, column] for run_id in run_ids] if column in table else []
    try:
        return _e(summarize(values).text())
    except ValueError:  # no member has the figure yet
        return "–"


def _curves(store: RunStore, runs: pd.DataFrame, run_ids: list[str], names: dict[str, str],
            plots: _Plots) -> str:
    """One chart per task, so the val references drawn are the task's own."""
    tasks = runs.set_index("id").loc[run_ids, "dataset"]
    parts = []
    for task, members in tasks.groupby(tasks, sort=False, dropna=False):
        ids = list(members.index)
        curves = figures.training_curves({names[run]: store.metrics(run) for run in ids},
                                         references=overlay_references(runs, ids, "val"))
        parts.append(f"<h3>{_e(task)}</h3>" + plots.div(curves))
    return "".join(parts)


def _pruning(runs: pd.DataFrame, run_ids: list[str], names: dict[str, str],
             plots: _Plots) -> str:
    parents = pruned_parents(runs, run_ids)
    if not parents:
        return "<p>No run here was pruned and rewound.</p>"
    labels = run_names(runs)
    parts = []
    for parent in parents:
        results, point, split = trade_off(runs, parent)
        chart = figures.prune_curve(results.rename(columns={"token_ratio": "ratio"}), point,
                                    split)
        rows = [[_e(labels.get(row["id"], row["id"])), _e(row["id"]),
                 _number(row["token_ratio"]), _number(row["segment_ratio"]), _e(row["order"]),
                 _number(row["accuracy"]), _number(row["effective_params"], 0)]
                for _, row in results.iterrows()]
        parts.append(f"<h3>{_e(names.get(parent, labels.get(parent, parent)))}</h3>"
                     + plots.div(chart, 560) + _table(
                         ["rewind", "id", "token ratio", "segment ratio", "order",
                          f"{split} top-1", "effective params"], rows))
    return "".join(parts)


def _disks(runs: pd.DataFrame, views: dict[str, dict[str, Any] | str], names: dict[str, str],
           split: str, plots: _Plots) -> str:
    datasets = runs.set_index("id")["dataset"]
    parts = []
    for run_id, view in views.items():
        if isinstance(view, str):
            parts.append(f"<h3>{_e(names[run_id])}</h3><p>{_e(view)}</p>")
            continue
        disk = figures.poincare_disk(view["disk"], view["labels"], view["indices"],
                                     class_names(datasets[run_id]),
                                     title=f"{names[run_id]} ({split})")
        found = view["figures"]
        numbers = ", ".join(f"{label} {_number(found.get(key), 3)}" for key, label in (
            ("knn_accuracy", "k-NN accuracy (ball)"), ("silhouette", "silhouette (ball)"),
            ("disk_knn_accuracy", "k-NN accuracy (disk)")))
        parts.append(f"<h3>{_e(names[run_id])}</h3>" + plots.div(disk, 560)
                     + f"<p>{numbers}</p>")
    return "".join(parts)


def _group(store: RunStore, group: Subject) -> str:
    """The one command that trains the whole seed group again."""
    command, missing = group_command([store.get_run(run)["config"] for run in group.run_ids])
    text = (f'<h3 id="group-{_e(group.given)}">Seed group {_e(group.given)}</h3>'
            f"<pre><code>{_e(command)}</code></pre>")
    return text + (f"<p>No flag sets {_e(', '.join(missing))}: see the members' configs.</p>"
                   if missing else "")


def _run(store: RunStore, run_id: str, names: dict[str, str]) -> str:
    run = store.get_run(run_id)
    parent = store.get_run(run["parent_id"]) if run.get("parent_id") else None
    lines, missing = run_commands(run, parent)
    facts = [f"id {run_id}", f"kind {run['kind']}", f"status {run['status']}"]
    if parent is not None:
        facts.append(f"parent {parent['id']}")
    parts = [f'<h3 id="run-{_e(run_id)}">{_e(names[run_id])}</h3>',
             f"<p>{_e(' · '.join(facts))}</p>"]
    if run.get("reason"):
        parts.append(f"<p>{_e(run['reason'])}</p>")
    parts.append("<h4>Reproduce</h4><pre><code>" + _e("\n".join(lines)) + "</code></pre>")
    if missing:
        parts.append(f"<p>No flag sets {_e(', '.join(missing))}, which differ from the "
                     "defaults in this run: see its config.</p>")
    parts.append("<h4>Config</h4><pre><code>" + _e(json.dumps(run["config"], indent=1))
                 + "</code></pre>")
    if run["summary"]:
        parts.append("<details><summary>Summary</summary><pre><code>"
                     + _e(json.dumps(run["summary"], indent=1, default=str))
                     + "</code></pre></details>")
    return "".join(parts)


def _environment(store: RunStore, run_ids: list[str], names: dict[str, str]) -> str:
    here = environment.machine()
    text = ("<h3>The machine that wrote this report</h3>"
            + _table(["", ""], [[_e(k), _e(v)] for k, v in here.items()]))
    recorded = dict(_recorded(store, run_ids))
    if not recorded:
        return text + ("<p>The runs recorded no environment of their own; each config's "
                       "<code>device</code> says what it asked for.</p>")
    keys = list(dict.fromkeys(key for found in recorded.values() for key in found))
    return text + "<h3>What the runs recorded</h3>" + _table(
        ["run", *keys], [[_e(names[run_id]), *(_e(found.get(key, "–")) for key in keys)]
                         for run_id, found in recorded.items()])


def _recorded(store: RunStore, run_ids: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
    for run_id in run_ids:
        found = environment.recorded(store.get_run(run_id)["summary"])
        if found is not None:
            yield run_id, found


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
pre {{ background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
nav {{ margin-bottom: 1.5em; }}
section {{ margin-top: 2.5em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
