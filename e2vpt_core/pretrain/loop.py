"""Pretrain the bundled offline ViT on formula- and font-generated images.

The offline default backbone is a small
timm ViT that this script pretrains from scratch on generated data
(``--data fractal``: FractalDB-style classes, ``pretrain.fractal``;
``--data scenes``: glyph scenes, ``pretrain.scenes``; see
``pretrain.tasks``).  Every step draws fresh images; checkpoints
are written atomically every few minutes, so whatever sits in ``--out`` is
always a complete, loadable model with its recipe.

    python -m e2vpt_core.pretrain --out assets/builtin-vit-tiny --steps 5000

``--resume-from DIR`` continues from DIR's weights (fresh optimizer and a new
schedule), e.g. later on a GPU with ``--device cuda``. On a GPU, ``--workers N``
renders the images in N processes, and ``--embed-dim`` / ``--depth`` /
``--num-heads`` pretrain another shape from scratch. The quick demo must still
run on 2 CPU cores in 4 minutes, which bounds the shape: this one (8 blocks of 6
heads, 3.6 M parameters) costs 1.34x the default's E²VPT training step
(``benchmarks/backbone_shapes.py``):

    python -m e2vpt_core.pretrain --out DIR --data scenes --layout-weight 5 --device cuda \
        --workers 14 --batch-size 1024 --steps 20000 --depth 8 --num-heads 6
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import deque
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from ..fileio import atomic_write, write_safetensors
from ..signals import handling
from . import tasks as pretrain_tasks
from .files import hardware, sha256, write_hub_config, write_json

BUILTIN_VIT_TINY_KWARGS: dict = {
    "img_size": 32,
    "patch_size": 4,
    "in_chans": 3,
    "embed_dim": 192,
    "depth": 6,
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "class_token": True,
    "global_pool": "token",
}
BUILTIN_MEAN = (0.5, 0.5, 0.5)
BUILTIN_STD = (0.5, 0.5, 0.5)
HEAD_KEYS = ("head.weight", "head.bias")
MODEL_FILE = "model.safetensors"
HEAD_FILE = "pretrain_head.safetensors"
RECIPE_FILE = "recipe.json"
RECIPE_FORMAT = "e2vpt_core.pretrain/1"


def _opt(default: object, text: str) -> Any:
    """A config field whose CLI help text lives next to it."""
    return field(default=default, metadata={"help": text})


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (same config → same run)."""

    out: str = field(metadata={"help": "output directory (checkpoint, recipe, log)"})
    data: str = _opt("fractal", "pretraining data: fractal or scenes")
    steps: int = _opt(1000, "optimizer steps in this run")
    stop_after: int = _opt(0, "stop after this many steps of the --steps schedule (0: at its "
                           "end), as a stopped run did; its replay needs it")
    batch_size: int = _opt(64, "fresh images per step")
    num_classes: int = _opt(200, "fractal classes (IFS systems; scenes: all glyphs)")
    seed: int = _opt(0, "seed for the classes, the data stream and the init")
    lr: float = _opt(1e-3, "peak AdamW learning rate")
    min_lr: float = _opt(1e-5, "final cosine learning rate")
    weight_decay: float = _opt(0.05, "AdamW weight decay")
    warmup_steps: int = _opt(250, "linear warm-up steps")
    label_smoothing: float = _opt(0.1, "cross-entropy label smoothing")
    grad_clip: float = _opt(1.0, "gradient-norm clip")
    heldout_size: int = _opt(2000, "fixed held-out fractal images (other seed)")
    eval_every: int = _opt(250, "steps between held-out evaluations")
    log_every: int = _opt(20, "steps between log lines")
    save_every_min: float = _opt(10.0, "minutes between checkpoints")
    threads: int = _opt(1, "torch CPU threads")
    device: str = _opt("cpu", "cpu or cuda")
    precision: str = _opt("auto", "autocast: auto (bf16 on cuda, fp32 on cpu), bf16 or fp32")
    resume_from: str | None = _opt(None, "start from this directory's model.safetensors")
    log_file: str | None = _opt(None, "log path (None: OUT/pretrain.log)")
    layout_weight: float = _opt(0.0, "scenes: weight of the CLS foreground-layout loss (0: off)")
    depth: int = _opt(BUILTIN_VIT_TINY_KWARGS["depth"], "ViT blocks")
    embed_dim: int = _opt(BUILTIN_VIT_TINY_KWARGS["embed_dim"], "ViT width")
    num_heads: int = _opt(BUILTIN_VIT_TINY_KWARGS["num_heads"], "attention heads per block")
    workers: int = _opt(0, "processes rendering the training images (0: this one); "
                        "the stream depends on it")

    def __post_init__(self) -> None:
        if min(self.depth, self.embed_dim, self.num_heads) < 1 or self.embed_dim % self.num_heads:
            raise ValueError(
                f"no such ViT: --embed-dim {self.embed_dim} must be a positive multiple of "
                f"--num-heads {self.num_heads}, and --depth {self.depth} positive")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, not {self.workers}")
        if not 0 <= self.stop_after <= self.steps:
            raise ValueError(f"--stop-after must be in [0, --steps {self.steps}], not "
                             f"{self.stop_after}")

    def model_kwargs(self) -> dict:
        """timm ``VisionTransformer`` arguments: the bundled ViT's, at this width and depth."""
        shape = {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads}
        return {**BUILTIN_VIT_TINY_KWARGS, **shape}


def to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) → normalised float (B, 3, H, W) with BUILTIN_MEAN/STD."""
    x = torch.from_numpy(np.array(images)).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(BUILTIN_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(BUILTIN_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def evaluate(
    task: Any,
    model: torch.nn.Module,
    heads: torch.nn.ModuleDict,
    device: torch.device,
    precision: str = "auto",
    batch_size: int = 256,
) -> float:
    """The task's accuracy on its fixed held-out set."""
    images, targets = task.heldout()
    model.eval()
    total = 0.0
    for i in range(0, len(images), batch_size):
        part = {k: torch.from_numpy(v[i : i + batch_size]).to(device) for k, v in targets.items()}
        with _autocast(device, precision):
            step = task.step(model, heads, to_input(images[i : i + batch_size], device), part)
        total += step.acc * len(images[i : i + batch_size])
    model.train()
    return total / len(images)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast: default on cuda; on CPUs with avx512_bf16 it is ~30% faster."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _load_parent(model: VisionTransformer, heads: torch.nn.ModuleDict, src: Path,
                 parent: dict, cfg: PretrainConfig) -> None:
    """Load weights (not optimizer state) from ``src``, whose recipe is ``parent``.

    The heads are restored too when the parent pretrained on the same data and
    classes; otherwise they start fresh.
    """
    shape = ("embed_dim", "depth", "num_heads")
    kwargs = parent.get("model", {}).get("kwargs", {})
    theirs = {k: kwargs.get(k, BUILTIN_VIT_TINY_KWARGS[k]) for k in shape}
    if any(theirs[k] != getattr(cfg, k) for k in shape):
        raise ValueError(
            f"{src} holds a ViT of " + ", ".join(f"{k} {v}" for k, v in theirs.items())
            + "; resume it with the same --embed-dim, --depth and --num-heads")
    missing, unexpected = model.load_state_dict(load_file(str(src / MODEL_FILE)), strict=False)
    if unexpected or set(missing) - set(HEAD_KEYS):
        raise ValueError(f"{src / MODEL_FILE} does not match: {missing=} {unexpected=}")
    pargs = parent.get("args", {})
    same = all(pargs.get(k) == getattr(cfg, k) for k in ("num_classes", "seed"))
    if same and pargs.get("data", "fractal") == cfg.data and (src / HEAD_FILE).exists():
        saved = load_file(str(src / HEAD_FILE))
        model.load_state_dict({k: saved[k] for k in HEAD_KEYS}, strict=False)
        missing, unexpected = heads.load_state_dict(
            {k: v for k, v in saved.items() if k not in HEAD_KEYS}, strict=False)
        if unexpected or any(not k.startswith("layout.") for k in missing):
            raise ValueError(f"{src / HEAD_FILE} does not match: {missing=} {unexpected=}")


class _Stop:
    """SIGTERM/SIGINT → finish the current step, save, exit cleanly."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def pretrain(cfg: PretrainConfig, command: list[str] | None = None) -> dict:
    """Run the pretraining loop described by ``cfg``; return the final recipe.

    Writes ``model.safetensors`` (fp16, no head), ``pretrain_head.safetensors``
    and ``recipe.json`` to ``cfg.out`` every ``save_every_min`` minutes and at
    the end, each atomically; ``command`` (the CLI argv) goes into the recipe.
    """
    out = Path(cfg.out)
    log_path = Path(cfg.log_file) if cfg.log_file else out / "pretrain.log"
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    started, t0 = datetime.now(timezone.utc), time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    parent = None
    if cfg.resume_from is not None:
        recipe_path = Path(cfg.resume_from) / RECIPE_FILE
        parent = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    parent_steps = parent.get("total_steps", 0) if parent else 0
    task = pretrain_tasks.build_task(
        cfg.data, num_classes=cfg.num_classes, seed=cfg.seed, parent_steps=parent_steps,
        heldout_size=cfg.heldout_size, batch_size=cfg.batch_size,
        label_smoothing=cfg.label_smoothing, layout_weight=cfg.layout_weight)
    model = VisionTransformer(**cfg.model_kwargs(), num_classes=task.num_classes)
    heads = task.extra_heads(model.embed_dim)
    if parent is not None:
        _load_parent(model, heads, Path(cfg.resume_from), parent, cfg)
    batches = pretrain_tasks.training_batches(task, cfg.workers)
    out.mkdir(parents=True, exist_ok=True)  # only once the configuration is known good
    model.to(device).train()
    heads.to(device).train()
    both = torch.nn.ModuleDict({"model": model, "heads": heads})
    opt = create_optimizer_v2(both, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = CosineLRScheduler(
        opt,
        t_initial=cfg.steps,
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_steps,
        warmup_lr_init=cfg.lr * 0.01,
        t_in_epochs=False,
    )
    log(f"# pretrain {started.isoformat()} {json.dumps(asdict(cfg))}")
    size = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    log(f"# backbone {size / 1e6:.2f} M parameters, {2 * size / 1e6:.1f} MB in fp16")

    history: list[list[float | None]] = []
    window: deque[tuple[float, float]] = deque(maxlen=100)
    last_log, last_save = time.monotonic(), time.monotonic()
    step, heldout_acc = 0, None

    def recent() -> tuple[float | None, float | None]:
        if not window:
            return None, None
        return float(np.mean([w[0] for w in window])), float(np.mean([w[1] for w in window]))

    def record_eval() -> float:
        acc = evaluate(task, model, heads, device, cfg.precision)
        loss = recent()[0]
        history.append([step, None if loss is None else round(loss, 4), round(acc, 4)])
        return acc

    def save(complete: bool) -> dict:
        state = {k: v.to("cpu", torch.float16) for k, v in model.state_dict().items()}
        head = {k: state.pop(k) for k in HEAD_KEYS}
        head.update({k: v.to("cpu", torch.float16) for k, v in heads.state_dict().items()})
        meta = {"format": "pt", "recipe": RECIPE_FORMAT}
        write_safetensors(out / MODEL_FILE, state, meta)
        write_safetensors(out / HEAD_FILE, head, meta)
        loss, acc = recent()
        recipe = {
            "format": RECIPE_FORMAT,
            "model": {
                "class": "timm.models.vision_transformer.VisionTransformer",
                "kwargs": cfg.model_kwargs(),
                "pretrain_num_classes": task.num_classes,
                "file": MODEL_FILE,
                "sha256": sha256(out / MODEL_FILE),
                "dtype": "float16",
                "head_removed": list(HEAD_KEYS),
                "head_file": HEAD_FILE,
                "mean": BUILTIN_MEAN,
                "std": BUILTIN_STD,
            },
            "data": task.data,
            "args": asdict(cfg),
            "command": command,
            "seed": cfg.seed,
            "complete": complete,
            "steps_done": step,
            "total_steps": parent_steps + step,
            "images_seen": step * cfg.batch_size,
            "wall_time_s": round(time.monotonic() - t0, 1),
            "started_utc": started.isoformat(),
            "saved_utc": datetime.now(timezone.utc).isoformat(),
            "hardware": hardware(device, cfg.threads),
            "metrics": {
                "train_loss_last100": loss,
                "train_acc_last100": acc,
                "heldout_acc": heldout_acc,
                "heldout_step": history[-1][0] if history else 0,
            },
            "history": history,
            "continuation_of": None
            if parent is None
            else {
                "path": cfg.resume_from,
                "recipe": parent,
                "note": "weights only; fresh AdamW state and a new warm-up + cosine schedule",
            },
        }
        atomic_write(out / RECIPE_FILE, write_json(recipe))
        write_hub_config(out, cfg.model_kwargs(),
                         BUILTIN_MEAN, BUILTIN_STD, task.hub_tag)
        return recipe

    stop = _Stop()
    with handling((signal.SIGTERM, signal.SIGINT), stop):
        last = cfg.stop_after or cfg.steps
        while step < last and not stop.requested:
            sched.step_update(step)
            images, targets = next(batches)
            x = to_input(images, device)
            y = {k: torch.from_numpy(v).to(device) for k, v in targets.items()}
            with _autocast(device, cfg.precision):
                result = task.step(model, heads, x, y)
            if not torch.isfinite(result.loss):
                raise FloatingPointError(f"non-finite loss at step {step}; nothing saved")
            opt.zero_grad(set_to_none=True)
            result.loss.backward()
            torch.nn.utils.clip_grad_norm_(both.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            window.append((result.loss.item(), result.acc))
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.monotonic()
                n = min(cfg.log_every, len(window))
                ips = n * cfg.batch_size / max(now - last_log, 1e-9)
                loss_m, acc_m = recent()
                log(
                    f"step {step}/{cfg.steps} loss {loss_m:.4f} acc {acc_m:.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} img/s {ips:.0f} "
                    f"elapsed {now - t0:.0f}s"
                )
                last_log = time.monotonic()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                heldout_acc = record_eval()
                log(f"eval step {step} heldout_acc {heldout_acc:.4f}")
                last_log = time.monotonic()
            if time.monotonic() - last_save >= cfg.save_every_min * 60:
                save(complete=False)
                log(f"saved step {step} to {out}")
                last_save = last_log = time.monotonic()
        if not history or history[-1][0] != step:
            heldout_acc = record_eval()
        recipe = save(complete=step >= cfg.steps)
        log(f"done step {step} heldout_acc {heldout_acc:.4f} wall {time.monotonic() - t0:.0f}s")
        return recipe


def parse_args(argv: list[str] | None = None) -> PretrainConfig:
    """CLI flags → PretrainConfig (one flag per config field)."""
    p = argparse.ArgumentParser(
        prog="python -m e2vpt_core.pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in fields(PretrainConfig):
        required = f.default is MISSING
        default = None if required else f.default
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=str if default is None else type(default),
            default=default,
            required=required,
            help=f.metadata["help"] if required else f"{f.metadata['help']} (default: {default})",
        )
    try:
        return PretrainConfig(**vars(p.parse_args(argv)))
    except ValueError as error:
        p.error(str(error))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m e2vpt_core.pretrain``."""
    pretrain(parse_args(argv), command=sys.argv if argv is None else argv)

