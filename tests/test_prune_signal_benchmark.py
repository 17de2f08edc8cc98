"""benchmarks/prune_signal.py end to end on a tiny backbone: every score's curve, its
reverse and the random draws, summarised as areas against random."""

from __future__ import annotations

import json

from benchmarks import prune_signal


def test_the_benchmark_runs_on_a_tiny_case(tiny_backbone, tmp_path):
    results = tmp_path / "signal.jsonl"
    table = prune_signal.main([
        "--tasks", "position", "--seeds", "0", "--backbone", tiny_backbone, "-P", "4",
        "-T", "1", "--epochs", "1", "--batch-size", "100", "--lr", "1.0", "--ratios", "0",
        "0.5", "--draws", "5", "--modes", "zero", "remove", "--device", "cpu",
        "--store", str(tmp_path / "store"), "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    scores = [name for name, _, _ in prune_signal.SCORES]
    assert len(rows) == 2 * 2 * (5 + 2 * len(scores))  # modes × ratios × curves
    assert sorted(table["score"]) == sorted(scores * 2)
    assert sorted(set(table["mode"])) == ["remove", "zero"]
    parent = {row["top1"] for row in rows if row["token_ratio"] == 0.0}
    assert len(parent) == 1  # nothing pruned at 0: every order is the parent
    for row in table.to_dict("records"):
        assert 0.0 <= row["area"] <= 100.0 and 0.0 <= row["reverse"] <= 100.0
        assert "±" in row["random"]
    half = [row for row in rows if row["token_ratio"] == 0.5]
    assert {row["kept_tokens"] for row in half} == {2}
    assert {row["seed"] for row in half if row["score"] == "random"} == set(range(1000, 1005))
