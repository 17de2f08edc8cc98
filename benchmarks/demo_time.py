"""The quick demo end to end: how long until every page has data, and what it shows.

Queues the demo (``e2vpt_core.demo.submit_demo``) on a fresh store and runs its five jobs
with the app's worker loop in this process, timing each. Prints, and appends to
``--results`` as one JSON line: per-job seconds, the total, both runs' test top-1, and the
Poincaré disk's kNN accuracy of each run against its test top-1 (the issue's target:
disk kNN ≥ 0.8 × test top-1), and where each run's view spent its time.

    python benchmarks/demo_time.py                      # the app's defaults
    python benchmarks/demo_time.py --epochs 5 --task texture --backbone builtin-vit-tiny

Measure on an idle machine: the demo's time budget (≤ 4 minutes on 2 cores) is for one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from e2vpt_core.demo import DEMO_EPOCHS, DEMO_TASK, submit_demo
from e2vpt_core.jobs import run_worker
from e2vpt_core.store import RunStore
from e2vpt_core.train.config import DEFAULT_BACKBONE


def time_demo(task: str, epochs: int, backbone: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        store = RunStore(root)
        start = time.perf_counter()
        demo = submit_demo(store, task, epochs=epochs, backbone=backbone)
        run_worker(store, idle_exit=0, poll=0.05, log=lambda line: None)
        total = time.perf_counter() - start
        jobs = store.jobs().sort_values("started_at")  # the order the worker took them
        failed = jobs[jobs["status"] != "done"]
        if not failed.empty:
            raise RuntimeError(f"demo jobs failed: {failed[['kind', 'status', 'error']]}")
        names = {demo.e2vpt_run: "e2vpt", demo.vpt_run: "vpt-deep"}
        seconds = {f"{i} {job.kind}" + (f" {names[job.run_id]}" if job.run_id in names
                                         and job.kind == "train" else ""):
                   round(job.finished_at - job.started_at, 1)
                   for i, job in enumerate(jobs.itertuples())}
        row: dict = {"task": task, "epochs": epochs, "backbone": backbone,
                     "threads": torch.get_num_threads(), "seconds": seconds,
                     "total_s": round(total, 1)}
        for name, run_id in (("e2vpt", demo.e2vpt_run), ("vpt-deep", demo.vpt_run)):
            summary = store.get_run(run_id)["summary"]
            view = summary["hyperbolic_test"]
            row[name] = {"test_top1": summary["test_top1"],
                         "disk_knn_accuracy": round(100 * view["disk_knn_accuracy"], 1),
                         "embed_seconds": view["seconds"]}
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=DEMO_TASK)
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--results", help="append the row to this JSON-lines file")
    args = parser.parse_args()
    row = time_demo(args.task, args.epochs, args.backbone)
    print(json.dumps(row))
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
