"""`e2vpt report` and the Runs page's "Download report": one self-contained HTML file with
every section, written atomically outside the store, never over a file without --force."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from app_helpers import by_label, empty_store, open_page

from e2vpt_core import PromptConfig
from e2vpt_core.cli import main
from e2vpt_core.prune import rewind_run
from e2vpt_core.report.commands import group_command
from e2vpt_core.report.html import report_html
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run

DATASET = "builtin:position"


class Page(HTMLParser):
    """What a report holds: tag ids, classes, text, and script sources and bodies."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.classes: list[str] = []
        self.script_sources: list[str] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.ids += [found["id"]] if found.get("id") else []
        self.classes += (found.get("class") or "").split()
        if tag == "script":
            self._in_script = True
            if found.get("src"):
                self.script_sources.append(found["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def _train(store: RunStore, backbone: str, method: str, **prompt: int) -> str:
    config = TrainConfig(backbone=backbone, dataset=DATASET, epochs=1, batch_size=64,
                         device="cpu", prompt=PromptConfig(method, **prompt))
    result = train_run(config, store)
    assert result.status == "completed", result.reason
    return result.run_id


def _store_view(store: RunStore, run_id: str, classes: int) -> None:
    """A Poincaré view as `hyperbolic.view.embedding_view` caches it (points, summary), so
    the fast tests read stored disks without a UMAP fit."""
    labels = torch.arange(4 * classes) % classes
    disk = 0.9 * torch.rand(len(labels), 2, generator=torch.Generator().manual_seed(0)) - 0.45
    store.save_tensors(run_id, "poincare_test_0123456789ab", {
        "disk": disk, "ball": disk.clone(), "labels": labels, "indices": torch.arange(len(labels))})
    store.update_summary(run_id, hyperbolic_test={
        "settings_hash": "0123456789ab", "knn_accuracy": 0.625, "silhouette": 0.125,
        "disk_knn_accuracy": 0.5})


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory) -> SimpleNamespace:
    """An e2vpt run with a rewind and a random-mask control, and a linear probe on the same
    task and backbone; the e2vpt run's and the probe's disks stored."""
    root = tmp_path_factory.mktemp("report-store")
    store = RunStore(root)
    e2vpt = _train(store, tiny_backbone, "e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                   num_segments=4)
    probe = _train(store, tiny_backbone, "linear")
    rewind = rewind_run(store, e2vpt, 0.5, epochs=1)
    control = rewind_run(store, e2vpt, 0.5, epochs=1, order="random", seed=4)
    assert rewind.status == control.status == "completed"
    for run in (e2vpt, probe):
        _store_view(store, run, store.get_run(run)["summary"]["num_classes"])
    return SimpleNamespace(root=root, store=store, e2vpt=e2vpt, probe=probe,
                           rewind=rewind.run_id, control=control.run_id)


def _report(trained, out: Path, *ids: str, extra: tuple[str, ...] = ()) -> int:
    return main(["report", *ids, "--out", str(out), "--store", str(trained.root), *extra])


def test_the_report_holds_every_section_and_needs_nothing_from_the_network(
        trained, tmp_path, capsys):
    out = tmp_path / "shared" / "report.html"
    assert _report(trained, out, trained.e2vpt, trained.probe) == 0
    captured = capsys.readouterr()
    assert f"written to {out}" in captured.out
    assert "computing the Poincaré disk" not in captured.err  # both disks were stored
    text = out.read_text()
    page = Page(text)
    assert {"results", "curves", "pruning", "disks", "runs", "environment"} <= set(page.ids)
    assert page.script_sources == []  # plotly.js inlined, no CDN, nothing to fetch
    assert '<script src="http' not in text
    assert text.count("* plotly.js v") == 1  # the library once, however many figures
    assert page.classes.count("plotly-graph-div") == 4  # curves, trade-off, two disks
    scripts = " ".join(page.scripts)
    assert '"#000001"' not in scripts  # plotly's colours, not Streamlit's placeholders
    for title in ("Training curves", "Pruning trade-off (test top-1)",
                  "random masks (mean"):
        assert title in scripts, title
    words = page.words

    runs = trained.store.runs().set_index("id")
    chance = 100 / runs.at[trained.e2vpt, "num_classes"]
    assert f"{chance:.2f}" in words  # chance beside the accuracies
    for split in ("val", "test"):
        assert f"linear probe ({split})" in words
        assert f"{runs.at[trained.probe, f'{split}_top1']:.2f}" in words
        assert f"{runs.at[trained.e2vpt, f'{split}_top1']:.2f}" in words

    config = trained.store.get_run(trained.e2vpt)["config"]
    assert json.dumps(config, indent=1) in "\n".join(page.text)  # the config, verbatim
    assert "e2vpt train --backbone" in words and "--method e2vpt -P 4 -T 2" in words
    assert f"e2vpt rewind {trained.e2vpt} --token-ratio 0.5" not in words  # not asked for

    assert f"torch {torch.__version__}" in words and "e2vpt-core" in words
    assert "CPUs" in words and "OS" in words
    recorded = trained.store.get_run(trained.e2vpt)["summary"]["environment"]
    assert recorded["torch"] == torch.__version__ and recorded["CPUs"]  # written in training
    assert "What the runs recorded" in words
    assert words.count("k-NN accuracy (ball) 0.625") == 2  # each stored disk's figures


def test_a_rewind_brings_its_parents_trade_off_and_both_commands(trained, tmp_path):
    out = tmp_path / "rewind.html"
    assert _report(trained, out, trained.control, extra=("--no-disks",)) == 0
    page = Page(out.read_text())
    assert "disks" not in page.ids  # one run: no pair of disks
    assert "Pruning trade-off (test top-1)" in " ".join(page.scripts)
    words = page.words
    assert "e2vpt train --backbone" in words  # the parent first
    assert (f"e2vpt rewind {trained.e2vpt} --token-ratio 0.5 --order random --seed 4"
            in words)
    assert trained.rewind in words  # the table of the parent's rewinds


def test_no_disks_draws_the_stored_disk_and_says_how_to_get_the_other(trained, tmp_path):
    before = sorted(path.name for path in (trained.root / trained.rewind).iterdir())
    out = tmp_path / "pair.html"
    assert _report(trained, out, trained.e2vpt, trained.rewind, extra=("--no-disks",)) == 0
    page = Page(out.read_text())
    assert f"e2vpt embed {trained.rewind} --split test" in page.words
    assert page.words.count("k-NN accuracy (ball) 0.625") == 1  # the e2vpt run's, stored
    assert sorted(path.name for path in (trained.root / trained.rewind).iterdir()) == before


def test_an_existing_file_is_kept_unless_forced(trained, tmp_path, capsys):
    out = tmp_path / "report.html"
    out.write_text("mine")
    assert _report(trained, out, trained.probe, extra=("--no-disks",)) == 2
    error = capsys.readouterr().err.strip()
    assert "exists" in error and "--force" in error and len(error.splitlines()) == 1
    assert out.read_text() == "mine"
    assert _report(trained, out, trained.probe, extra=("--no-disks", "--force")) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("where", ["unknown", "inside"])
def test_an_unknown_id_or_a_path_in_the_store_writes_nothing(trained, tmp_path, capsys,
                                                             where):
    out = trained.root / "report.html" if where == "inside" else tmp_path / "report.html"
    ids = [trained.probe, "no-such-run"] if where == "unknown" else [trained.probe]
    assert _report(trained, out, *ids, extra=("--no-disks",)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert ("'no-such-run' is neither a run nor a seed group" if where == "unknown"
            else "inside the run store") in error[0]
    assert not out.exists()
    assert list(out.parent.glob(".report.html.*")) == []  # no temporary file left either


@pytest.mark.slow
def test_missing_disks_are_computed_with_progress_on_stderr(trained, tmp_path, capsys):
    """Two UMAP fits (slow): a disk not stored is computed, announced, and cached."""
    root = tmp_path / "store"
    shutil.copytree(trained.root, root)
    out = tmp_path / "computed.html"
    threads = torch.get_num_threads()
    try:
        assert main(["report", trained.rewind, trained.control, "--out", str(out),
                     "--store", str(root)]) == 0
    finally:
        torch.set_num_threads(threads)  # numba's OpenMP layer may change it
    progress = capsys.readouterr().err
    for run in (trained.rewind, trained.control):
        assert f"computing the Poincaré disk of run {run} on test" in progress
        assert "hyperbolic_test" in RunStore(root).get_run(run)["summary"]
    page = Page(out.read_text())
    assert page.classes.count("plotly-graph-div") == 4  # curves, trade-off, two disks
    assert "no disk" not in page.words


def _member(store: RunStore, seed: int, top1: float) -> str:
    config = TrainConfig(dataset="builtin:orientation", epochs=1, seed=seed,
                         group_id="e2vpt-orientation-ab12", prompt=PromptConfig("e2vpt"))
    run_id = store.create_run(config.to_dict(), status="completed")
    store.log_metrics(run_id, 1, 0, {"train/loss": 1.0, "train/lr": 0.1, "val/top1": top1})
    store.update_summary(run_id, val_top1=top1, test_top1=top1 - 1.0)
    return run_id


def test_a_seed_group_reads_as_mean_and_sd_with_one_command(tmp_path):
    store = RunStore(tmp_path / "store")
    members = [_member(store, seed, top1) for seed, top1 in ((0, 70.0), (1, 74.0))]
    page = Page(report_html(store, ["e2vpt-orientation-ab12"], compute_disks=False))
    words = page.words
    assert "72.0 ± 2.8 (2 seeds)" in words and "71.0 ± 2.8 (2 seeds)" in words
    command = group_command([store.get_run(run)["config"] for run in members])[0]
    assert command.endswith("--seeds 0 1") and command in words
    assert all(run in words for run in members)
    assert "No flag sets group_id" not in words  # a group id changes nothing trained


def test_the_runs_page_offers_the_report_of_the_compared_runs_and_groups(tmp_path,
                                                                        monkeypatch):
    store = empty_store(tmp_path, monkeypatch)
    for seed, top1 in ((0, 70.0), (1, 74.0)):
        _member(store, seed, top1)
    app = open_page("runs.py")
    compared = by_label(app.multiselect, "Overlay curves of").value
    assert compared == ["e2vpt-orientation-ab12"]  # a seed group, as the report reads it
    button = by_label(app.get("download_button"), "Download report (.html)")
    assert button.proto.id.endswith(f"report-{'-'.join(compared)}")  # the report of those
    assert button.proto.ignore_rerun  # a click builds the file; the page does not rerun
