#!/usr/bin/env bash
# The CUDA path end to end on ViT-B/16 with bf16 autocast, for anyone with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh                  # report to gpu_check.md
#   bash benchmarks/gpu_check.sh --update-docs    # and into docs/BENCHMARKS.md
#   bash benchmarks/gpu_check.sh --cpu-smoke      # the logic on a tiny ViT on the CPU
# Without a GPU it stops with one line (exit 2). Options: --help.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
# the repository root on the path, the caller's directory kept (for a relative --out)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m benchmarks.gpu_check "$@"
