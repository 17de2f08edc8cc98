"""benchmarks/prune_table.py on a tiny backbone: each rewound ratio beside random-mask
rewinds of the same counts (the lottery-ticket control)."""

from __future__ import annotations

import json

from benchmarks import prune_table


def test_every_rewound_ratio_has_random_mask_controls(tiny_backbone, tmp_path, capsys):
    results = tmp_path / "table.jsonl"
    prune_table.main([
        "--tasks", "position", "--ratios", "0.5", "--epochs", "1", "--inits", "fresh",
        "--modes", "zero", "--backbone", tiny_backbone, "-P", "4",
        "--store", str(tmp_path / "store"), "--results", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((row["order"], row["order_seed"]) for row in rows) == [
        ("importance", 0), ("random", 0), ("random", 1), ("random", 2)]
    assert {row["token_ratio"] for row in rows} == {0.5}
    assert all(row["status"] == "completed" for row in rows)
    assert len({row["effective_params"] for row in rows}) == 1  # same counts
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "fresh / zero random" in line)
    assert "fresh / zero" in header.replace("fresh / zero random", "")
    random = [row["test_top1"] for row in rows if row["order"] == "random"]
    mean = sum(random) / 3
    assert f"{mean:.1f} ± " in out and "(3)" in out
