"""`e2vpt runs` by name and tag, `e2vpt rename` and `e2vpt tag`: the app's names, in the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import last_json

from e2vpt_core import PromptConfig
from e2vpt_core.cli import main
from e2vpt_core.store import RunStore
from e2vpt_core.store.names import NAME_KEY, TAGS_KEY, run_names
from e2vpt_core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "store")


def _run(store: RunStore, method: str = "e2vpt", **summary) -> str:
    config = TrainConfig(dataset="builtin:orientation", prompt=PromptConfig(method))
    run_id = store.create_run(config.to_dict(), status="completed")
    if summary:
        store.update_summary(run_id, **summary)
    return run_id


def _cli(store: RunStore, *argv: str) -> int:
    return main([*argv, "--store", str(store.root)])


def test_runs_shows_the_apps_names_and_tags(store, capsys):
    first = _run(store, val_top1=58.333333, trainable_params=18824)
    second = _run(store, method="vpt-deep", **{NAME_KEY: "baseline", TAGS_KEY: ["paper"]})
    assert _cli(store, "runs", "--json") == 0
    rows = {row["id"]: row for row in last_json(capsys.readouterr().out)}
    assert rows[first]["name"] == "e2vpt P10 T5 · orientation" and rows[first]["tags"] == []
    assert rows[second]["name"] == "baseline" and rows[second]["tags"] == ["paper"]
    assert rows[first]["name"] == run_names(store.runs())[first]
    assert _cli(store, "runs") == 0
    text = capsys.readouterr().out
    assert "e2vpt P10 T5 · orientation" in text and "baseline" in text and "paper" in text
    assert "58.33 " in text and "18,824" in text and "None" not in text


def test_rename_and_tag_write_the_fields_the_app_reads(store, capsys):
    run_id = _run(store)
    assert _cli(store, "rename", run_id, "  my   run ") == 0
    assert "named 'my run'" in capsys.readouterr().out
    assert _cli(store, "tag", run_id, "paper", "cpu,paper", "--json") == 0
    assert last_json(capsys.readouterr().out) == {"run_id": run_id, "tags": ["paper", "cpu"]}
    summary = store.get_run(run_id)["summary"]
    assert summary[NAME_KEY] == "my run" and summary[TAGS_KEY] == ["paper", "cpu"]
    assert _cli(store, "tag", run_id, "paper", "--remove") == 0
    assert store.get_run(run_id)["summary"][TAGS_KEY] == ["cpu"]
    assert _cli(store, "rename", run_id, "") == 0  # back to the derived name, tags kept
    summary = store.get_run(run_id)["summary"]
    assert summary[NAME_KEY] is None and summary[TAGS_KEY] == ["cpu"]
    assert run_names(store.runs())[run_id] == "e2vpt P10 T5 · orientation"


@pytest.mark.parametrize("argv", [["rename", "20990101-000000-dead", "x"],
                                  ["tag", "20990101-000000-dead", "x"]])
def test_an_unknown_run_is_refused_in_one_line(argv, store, capsys):
    _run(store)
    before = store.runs()
    assert _cli(store, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"e2vpt {argv[0]}: error: no run '20990101-000000-dead' in store "
                   f"{store.root.resolve()}"]
    assert store.runs().equals(before)


def test_a_blank_tag_is_refused(store, capsys):
    run_id = _run(store)
    assert _cli(store, "tag", run_id, " ", ",") == 2
    assert "no tag given" in capsys.readouterr().err


def test_runs_rename_and_tag_import_no_torch(store):
    run_id = _run(store)
    code = f"""
import contextlib, io, sys
from e2vpt_core.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["rename", {run_id!r}, "x", "--store", {str(store.root)!r}]),
             main(["tag", {run_id!r}, "t", "--store", {str(store.root)!r}]),
             main(["runs", "--store", {str(store.root)!r}, "--json"])]
print(codes, sorted(m for m in ("torch", "timm", "umap") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 0, 0] []"
