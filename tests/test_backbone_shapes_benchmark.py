"""benchmarks/backbone_shapes.py: shapes parse, bad ones are refused, the table is complete."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import backbone_shapes


def test_shapes_parse_and_bad_ones_are_refused():
    assert backbone_shapes.parse_shape("8x192x6") == {"depth": 8, "embed_dim": 192,
                                                      "num_heads": 6}
    with pytest.raises(argparse.ArgumentTypeError, match="not a multiple of 7"):
        backbone_shapes.parse_shape("6x192x7")
    with pytest.raises(argparse.ArgumentTypeError, match="DEPTHxWIDTHxHEADS"):
        backbone_shapes.parse_shape("wide")


def test_every_shape_gets_a_row_against_the_first(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["backbone_shapes", "--shapes", "1x48x4", "2x64x4",
                                     "--batch-size", "2", "--rounds", "1", "--steps", "1"])
    backbone_shapes.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| 1 × 48 × 4 |") and rows[2].endswith("| 1.00× |")
    assert rows[3].startswith("| 2 × 64 × 4 |") and len(rows) == 4
    # The deeper, wider backbone has more parameters than the first.
    sizes = [float(row.split(" | ")[1].removesuffix(" M")) for row in rows[2:]]
    assert sizes[1] > sizes[0]
