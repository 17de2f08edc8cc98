"""The quick demo: one click queues what every view of the app needs, minutes on a CPU.

On a fresh machine the store is empty, so the Train, Pruning and Embeddings pages have
nothing to show. The demo queues, in this order, on one built-in task with the bundled
backbone: an E²VPT run and a VPT-deep run (the paper's pair), the E²VPT run's full-pass
importance, one rewind of it at a fixed prune ratio, and the Poincaré comparison of the
two runs. The worker runs them like any others, each after the runs it needs (importance
and the rewind after the E²VPT run's training, the comparison after both): nothing here
trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import BUILTIN_TASKS
from .config import PromptConfig
from .jobs import submit_embed, submit_importance, submit_rewind, submit_train
from .store import RunStore
from .train import TrainConfig
from .train.config import DEFAULT_BACKBONE

# Texture: the task the bundled backbone reads best, and the only one measured whose
# classes stay apart on the 2-D disk (docs/BENCHMARKS.md, "The quick demo's task").
DEMO_TASK = "texture"
DEMO_EPOCHS = 5
DEMO_TOKEN_RATIO = 0.5
DEMO_SEGMENT_RATIO = 0.25
DEMO_EMBED_POINTS = 500
LIVE_IMPORTANCE_EVERY = 2  # steps between heatmap snapshots (13 steps per epoch here)


@dataclass
class DemoJobs:
    """The runs and jobs one demo queued."""

    e2vpt_run: str
    vpt_run: str
    train_jobs: list[int]
    importance_job: int
    rewind_job: int
    embed_job: int


def demo_config(method: str, task: str = DEMO_TASK, epochs: int = DEMO_EPOCHS,
                backbone: str = DEFAULT_BACKBONE) -> TrainConfig:
    """The paper's recipe for `method` on a built-in task, with frequent live scores."""
    if task not in BUILTIN_TASKS:
        raise ValueError(f"unknown built-in task {task!r}; one of {sorted(BUILTIN_TASKS)}")
    return TrainConfig(backbone=backbone, dataset=f"builtin:{task}",
                       prompt=PromptConfig(method), epochs=epochs,
                       importance_every=LIVE_IMPORTANCE_EVERY)


def submit_demo(store: RunStore, task: str = DEMO_TASK, epochs: int = DEMO_EPOCHS,
                backbone: str = DEFAULT_BACKBONE) -> DemoJobs:
    """Queue the demo's jobs; bad input (task, epochs, backbone) raises before any job."""
    e2vpt = demo_config("e2vpt", task, epochs, backbone)
    vpt = demo_config("vpt-deep", task, epochs, backbone)
    from .train.preflight import check_sources  # torch: only when the demo is queued

    check_sources(e2vpt)
    e2vpt_job, e2vpt_run = submit_train(store, e2vpt)
    vpt_job, vpt_run = submit_train(store, vpt)
    return DemoJobs(
        e2vpt_run=e2vpt_run,
        vpt_run=vpt_run,
        train_jobs=[e2vpt_job, vpt_job],
        importance_job=submit_importance(store, e2vpt_run),
        rewind_job=submit_rewind(store, e2vpt_run, DEMO_TOKEN_RATIO, DEMO_SEGMENT_RATIO),
        embed_job=submit_embed(store, [vpt_run, e2vpt_run], "test",
                               max_points=DEMO_EMBED_POINTS),
    )
