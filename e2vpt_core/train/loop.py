"""The training loop, top to bottom: build, (resume), epochs of SGD steps, evaluate, store.

Everything a run produces goes to the run store as it happens: per-step loss and lr,
per-epoch evaluation, a checkpoint at the end of every epoch, the final adapter artifact.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..artifacts import save_adapter, trainable_state_dict
from ..models import PromptedViT, build_backbone, create_model
from ..signals import handling
from ..store import RunStore, StoreError
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import build_loaders, epoch_seed
from .device import bf16_autocast, machine, resolve_device, training_precision
from .evaluate import evaluate
from .optim import build_optimizer, build_schedule
from .tracker import ImportanceTracker

ProgressFn = Callable[[dict[str, Any]], None]


class TrainingFailed(RuntimeError):
    """A run that cannot go on (e.g. a non-finite loss); the message is the stored reason."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while training (`kill`, a container or service stop): handled like Ctrl-C,
    so the run is marked cancelled and resumable instead of left `running`."""


def _sigterm_interrupts() -> AbstractContextManager[None]:
    """Turn SIGTERM into `Terminated` while training, unless the process already handles
    SIGTERM itself (a worker) or this is not the main thread (signals go there only)."""

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated("SIGTERM")

    unhandled = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    return handling((signal.SIGTERM,) if unhandled else (), terminate)


@dataclass
class RunResult:
    run_id: str
    status: str
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "status": self.status, **self.metrics}
        if self.reason:
            out["reason"] = self.reason
        return out


def train_run(
    config: TrainConfig,
    store: RunStore,
    run_id: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train one run to completion, recording everything in `store`; never raises for a
    failed run (non-finite loss, bad data): the result and the store carry the reason."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    if run_id is None:
        run_id = store.create_run(config.to_dict(), kind="train")
    if rank == 0:
        store.set_status(run_id, "running")
    try:
        with _sigterm_interrupts():
            metrics = _train(config, store, run_id, resume, progress, should_stop, rank)
    except TrainingFailed as failure:
        return _finish(store, run_id, rank, "failed", str(failure))
    except KeyboardInterrupt as interrupt:
        how = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
        _finish(store, run_id, rank, "cancelled",
                f"{how}; continue from its last checkpoint with: e2vpt resume {run_id}")
        raise
    except Exception as error:  # bad data, bad config, a full disk: stored as the reason
        return _finish(store, run_id, rank, "failed", f"{type(error).__name__}: {error}",
                       traceback.format_exc())
    if metrics is None:
        return _finish(store, run_id, rank, "cancelled", "stop requested")
    if rank == 0:
        store.update_summary(run_id, **metrics)
        store.set_status(run_id, "completed")
    return RunResult(run_id, "completed", metrics=metrics)


def _finish(store: RunStore, run_id: str, rank: int, status: str, reason: str,
            details: str | None = None) -> RunResult:
    """Record how the run ended: its status first (one small row), then the events. On a
    full disk the events may not fit where the status did; they go to stderr instead, and
    the run still does not stay `running`."""
    if rank == 0:
        store.set_status(run_id, status, reason)
        for message in (details, f"{status}: {reason}"):
            if message is None:
                continue
            try:
                store.log_event(run_id, message, level="error")
            except StoreError as error:
                print(f"run {run_id}: could not record an event ({error}): {message}",
                      file=sys.stderr)
    return RunResult(run_id, status, reason)


@dataclass
class _Session:
    """What one run's epochs share: built once in `_build`, used by `_epoch`."""

    config: TrainConfig
    store: RunStore
    run_id: str
    model: PromptedViT
    trained: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    sampler: Any
    eval_loaders: dict[str, Any]
    num_classes: int
    device: torch.device
    amp: bool
    rank: int
    world: int
    tracker: Any

    @property
    def total_steps(self) -> int:
        return self.config.epochs * len(self.train_loader)


def _train(
    config: TrainConfig, store: RunStore, run_id: str, resume: bool,
    progress: ProgressFn | None, should_stop: Callable[[], bool] | None, rank: int,
) -> dict[str, Any] | None:
    run = _build(config, store, run_id, rank)
    start_epoch, step = 0, 0
    if resume and store.has_tensors(run_id, CHECKPOINT):
        start_epoch, step = load_checkpoint(store, run_id, run.model, run.optimizer)
        if rank == 0:
            store.truncate_metrics(run_id, after_step=step)
            store.log_event(run_id, f"resumed after epoch {start_epoch} (step {step})")
    elif rank == 0:
        if resume:  # deleted, or never written: starting over must not pass for resuming
            message = f"run {run_id} has no checkpoint: resuming starts it over from epoch 0"
            store.log_event(run_id, message, level="warning")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        store.truncate_metrics(run_id, after_step=-1)
        store.save_tensors(run_id, "init", trainable_state_dict(run.model))
        store.update_summary(run_id, num_classes=run.num_classes, environment=machine(),
                             precision=training_precision(run.config.amp, run.device),
                             **run.model.parameter_summary())

    with run.model.mask_gradients(per_layer=True) if run.tracker is not None \
            else nullcontext():
        for epoch in range(start_epoch, config.epochs):
            step = _epoch(run, epoch, step, progress, should_stop)
            if step is None:
                return None
    final: dict[str, Any] = {"epochs_done": config.epochs, "steps": step}
    if rank == 0:
        for split, loader in run.eval_loaders.items():
            result = evaluate(run.model, loader, run.num_classes, run.device, run.amp)
            final[f"{split}_top1"] = result["top1"]
            final[f"{split}_mean_per_class"] = result["mean_per_class"]
            store.save_tensors(run_id, f"per_class_{split}", {
                "accuracy": torch.tensor([v if v is not None else float("nan")
                                          for v in result["per_class"]])})
        final.update(run.model.parameter_summary())
        save_adapter(run.model, store.run_dir(run_id) / "adapter")
    return final


def _build(config: TrainConfig, store: RunStore, run_id: str, rank: int) -> _Session:
    world = dist.get_world_size() if dist.is_initialized() else 1
    device = resolve_device(config.device)
    backbone = build_backbone(config.backbone, pretrained=config.pretrained,
                              checkpoint_path=config.checkpoint)
    train_loader, sampler, eval_loaders, num_classes = build_loaders(
        config, backbone, device, rank, world)
    torch.manual_seed(config.prompt_init_seed)
    model = create_model(backbone, num_classes, config.prompt)
    model.backbone_name = config.backbone
    model.backbone_source = {"pretrained": config.pretrained, "checkpoint_path": config.checkpoint}
    _apply_rewind(model, config, store)
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_schedule(optimizer, config, len(train_loader))
    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)
    # Live importance: a running average of |dL/dmask| for the app's heatmaps.
    tracker = ImportanceTracker(decay=0.9) if model.visual_prompts is not None else None
    return _Session(config, store, run_id, model, trained, optimizer, scheduler, train_loader,
                    sampler, eval_loaders, num_classes, device,
                    config.amp and bf16_autocast(device), rank, world, tracker)


def _epoch(
    run: _Session, epoch: int, step: int, progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
) -> int | None:
    """One epoch of SGD steps, its evaluation and its checkpoint; the new global step, or
    None when a stop was requested."""
    config, store, model, optimizer = run.config, run.store, run.model, run.optimizer
    run.sampler.set_epoch(epoch)
    torch.manual_seed(epoch_seed(config.seed, epoch))  # dropout and augmentation
    run.trained.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    epoch_start, loss_sum = time.perf_counter(), 0.0
    for images, labels in run.train_loader:
        if should_stop is not None and should_stop():
            return None
        run.scheduler.step_update(step)
        lr = optimizer.param_groups[0]["lr"]
        images = images.to(run.device, non_blocking=True)
        labels = labels.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
            loss = torch.nn.functional.cross_entropy(run.trained(images), labels)
        loss_value = loss.item()  # the step's one host sync
        _check_finite(loss_value, epoch, step, lr, run.world, run.device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        if run.tracker is not None:
            run.tracker.update(model)
            model.clear_mask_grads()
            if run.rank == 0 and step % config.importance_every == 0:
                store.save_tensors(run.run_id, "importance_live", run.tracker.snapshot(),
                                   metadata={"step": str(step), "epoch": str(epoch)})
        loss_sum += loss_value
        if run.rank == 0 and step % config.log_every == 0:
            store.log_metrics(run.run_id, step, epoch, {"train/loss": loss_value, "train/lr": lr})
        if progress is not None and run.rank == 0:
            progress({"step": step, "total_steps": run.total_steps, "epoch": epoch,
                      "loss": loss_value, "lr": lr})

    metrics = {"train/epoch_loss": loss_sum / len(run.train_loader),
               "train/epoch_seconds": time.perf_counter() - epoch_start}
    main_split = config.eval_splits[0] if config.eval_splits else None
    if run.rank == 0 and main_split is not None:
        result = evaluate(model, run.eval_loaders[main_split], run.num_classes, run.device,
                          run.amp)
        for key in ("top1", "mean_per_class", "loss"):
            metrics[f"{main_split}/{key}"] = result[key]
    if run.rank == 0:
        store.log_metrics(run.run_id, step, epoch, metrics)
        save_checkpoint(store, run.run_id, model, optimizer, epoch + 1, step)
        if progress is not None:
            progress({"step": step, "total_steps": run.total_steps, "epoch": epoch,
                      "epoch_end": True, **metrics})
    if run.world > 1:
        dist.barrier()
    return step


def _apply_rewind(model: PromptedViT, config: TrainConfig, store: RunStore) -> None:
    """Fixed masks, starting values from an earlier run, pruned prompt entries set to 0.

    Pruned entries then stay exactly 0: their gradient is 0 through the mask, and weight
    decay and momentum of a 0 entry are 0.
    """
    if config.token_mask is not None or config.segment_mask is not None:
        model.set_masks(
            None if config.token_mask is None else torch.tensor(config.token_mask),
            None if config.segment_mask is None else torch.tensor(config.segment_mask),
        )
    if config.init_from_run is not None:
        initial = store.load_tensors(config.init_from_run, "init")
        params = dict(model.trainable_parameters())
        missing = sorted(set(params) - set(initial))
        if missing:
            raise ValueError(f"run {config.init_from_run}'s init has no values for {missing}")
        with torch.no_grad():
            for name, param in params.items():
                if initial[name].shape != param.shape:
                    raise ValueError(
                        f"run {config.init_from_run}'s init {name} has shape "
                        f"{tuple(initial[name].shape)}, this model {tuple(param.shape)}")
                param.copy_(initial[name])
    if model.visual_prompts is not None:
        with torch.no_grad():
            model.visual_prompts.mul_(model.prompt_mask())


def _check_finite(
    loss: float, epoch: int, step: int, lr: float, world: int, device: torch.device,
) -> None:
    finite = math.isfinite(loss)
    if world > 1:  # every rank must stop together, or the others hang in the all-reduce
        flag = torch.tensor(float(finite), device=device)  # NCCL reduces GPU tensors
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag.item())
    if not finite:
        raise TrainingFailed(
            f"non-finite loss ({loss}) at epoch {epoch}, step {step}, lr {lr:.4g}: "
            "the learning rate is likely too high"
        )
