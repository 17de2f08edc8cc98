"""A prompt method without prompts trains the head alone: refused before a run exists, from
the CLI as from the app, while a key-value-only E²VPT stays allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2vpt_core import PromptConfig
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.preflight import check_prompts, check_sources

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method, lengths", [("e2vpt", "P = 0 and T = 0"),
                                             ("vpt-deep", "P = 0"), ("vpt-shallow", "P = 0")])
def test_a_prompt_method_without_prompts_is_refused(method, lengths):
    config = TrainConfig(prompt=PromptConfig.for_method(method, 0, 0))
    with pytest.raises(ValueError, match=f"{method} with {lengths} has no prompts"):
        check_sources(config)


@pytest.mark.parametrize("prompt", [PromptConfig("e2vpt", visual_prompt_len=0, kv_prompt_len=3),
                                    PromptConfig("vpt-deep", visual_prompt_len=1),
                                    PromptConfig("linear")])
def test_methods_with_their_prompts_or_without_any_pass(prompt):
    check_prompts(prompt)


@pytest.mark.slow
def test_the_cli_refuses_it_in_one_line_and_creates_no_run(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "e2vpt_core", "train", "--method", "e2vpt", "-P", "0", "-T", "0",
         "--dataset", "builtin:digits", "--store", str(tmp_path), "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert process.returncode != 0
    assert "e2vpt with P = 0 and T = 0 has no prompts" in process.stderr + process.stdout
    assert "Traceback" not in process.stderr
    assert RunStore(tmp_path).runs().empty
