"""`e2vpt`'s help: instant (no torch), every argument explained, defaults shown; the bar."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2vpt_core.cli import build_parser
from e2vpt_core.cli.common import ProgressBar
from e2vpt_core.prune.options import LEAVE_ONE_OUT

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "umap", "pandas")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_parsing_help_and_argument_errors_import_no_torch():
    """The parser of every command, its --help and a bad argument, in a fresh interpreter."""
    result = _fresh(f"""
import contextlib, io, sys
from e2vpt_core.cli import build_parser, main
parser = build_parser()
parser.parse_args(["train", "--epochs", "3"])
parser.parse_args(["sweep-prune", "RUN", "--ratios", "0.5"])
for argv in (["--help"], ["prune", "--help"], ["protocol", "--help"], ["train", "--epochs", "x"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit as stop:
            assert stop.code in (0, 2), stop.code
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_argument_of_every_command_has_help():
    missing = [f"{name} {action.dest}" for name, command in _commands().items()
               for action in command._actions
               if not (action.help or "").strip() or action.help == argparse.SUPPRESS]
    assert missing == []


def test_help_shows_defaults_but_never_none_or_false():
    commands = _commands()
    for name, command in commands.items():
        text = command.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
    train = " ".join(commands["train"].format_help().split())
    assert "(default: 100)" in train and "(default: builtin:digits)" in train
    assert "$E2VPT_STORE" in train
    sweep = " ".join(commands["sweep"].format_help().split())
    assert "(default: [0, 1, 2, 3, 4])" in sweep


def test_the_top_level_help_says_what_the_tool_is_and_its_rules():
    text = build_parser().format_help()
    for words in ("E²VPT", "$E2VPT_STORE", "--create-store", "--json", "last line",
                  "docs/METHOD.md", "rename", "tag"):
        assert words in text, words


def test_leave_one_out_is_described_once_and_by_the_prune_help():
    """The training split, as `noretrain.run_leave_one_out` measures it."""
    assert "training split" in LEAVE_ONE_OUT and not re.search(r"\bval\b", LEAVE_ONE_OUT)
    prune = " ".join(_commands()["prune"].format_help().split())
    assert " ".join(LEAVE_ONE_OUT.split()) in prune
    method = (ROOT / "docs" / "METHOD.md").read_text()
    assert LEAVE_ONE_OUT in method


def _event(step: int, epoch: int = 0, **values) -> dict:
    return {"step": step, "total_steps": 100, "epoch": epoch, **values}


def test_the_bar_counts_from_its_first_event_and_shows_no_loss_on_evaluations(capsys):
    bar = ProgressBar(True)
    bar(_event(51, loss=0.5))  # a resumed run: its first event is step 51
    assert bar.bar.n == 51 and bar.bar.format_dict["initial"] == 51
    assert bar.bar.format_dict["rate"] is None  # no rate from a single tick
    first = capsys.readouterr().err
    assert "51/100" in first and "step/s" in first and "?step/s" in first
    bar(_event(52, loss=0.4))
    bar(_event(52, epoch_end=True, **{"val/top1": 40.0, "train/epoch_loss": 0.45}))
    assert bar.bar.n == 52
    last = capsys.readouterr().err.split("\r")[-1]
    assert "val/top1=40.0" in last and "loss=" not in last
    bar(_event(1, loss=2.0))  # the next run of a sweep starts a new bar
    assert bar.bar.n == 1 and bar.bar.format_dict["initial"] == 1
    bar.close()


@pytest.mark.parametrize("argv", [["--help"], ["runs", "--help"], ["tag", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 0
    assert "usage: e2vpt" in capsys.readouterr().out
