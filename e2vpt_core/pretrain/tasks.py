"""What the bundled backbone pretrains on: the data stream, the loss and the held-out check.

Two tasks share one loop (``pretrain.loop``):

- ``fractal``: FractalDB-style IFS classes, one per image, cross-entropy on the CLS head.
- ``scenes``: glyph scenes (``pretrain.scenes``): the CLS head predicts the set of glyph
  classes present (soft-target cross-entropy) and a linear head on every patch token its
  glyph class or background (a synthetic segmentation map), so that patch tokens, which
  prompts read through attention, learn what is where. With ``layout_weight`` > 0 a linear
  head on the CLS token also reconstructs the scene's foreground coverage (16 x 16 cells,
  binary cross-entropy): a self-supervised target, the image's own ink, that makes the
  pooled token keep where things are instead of only which glyphs.

Neither task's labels are a downstream label: no count, position, orientation, distance
or digit identity is ever a target.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data.synth import SIZE
from .fractal import FractalStream, fixed_set, sample_ifs_classes
from .scenes import LAYOUT_CELL, MAX_OBJECTS, SceneBatch, glyph_bank, render_scenes

TASKS = ("fractal", "scenes")


@dataclass
class Step:
    loss: torch.Tensor
    acc: float  # top-1 accuracy (fractal) or top-1 precision (scenes: top class present)


class FractalTask:
    """One IFS class per image; the CLS head classifies it."""

    name = "fractal"
    hub_tag = "e2vpt_fractal"

    def __init__(self, num_classes: int, seed: int, stream_seed: list, held_seed: list,
                 heldout_size: int, batch_size: int, label_smoothing: float) -> None:
        self.num_classes = num_classes
        self.systems = sample_ifs_classes(num_classes, seed=seed)
        self.batch_size, self.stream_seed = batch_size, stream_seed
        self.stream = FractalStream(self.systems, batch_size,
                                    seed=np.random.SeedSequence(stream_seed))
        self.held = fixed_set(self.systems, heldout_size, seed=np.random.SeedSequence(held_seed))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.data = {
            "generator": "e2vpt_core.pretrain.fractal (FractalDB-style IFS, chaos game)",
            "num_classes": num_classes,
            "class_seed": seed,
        }

    def extra_heads(self, width: int) -> nn.ModuleDict:
        return nn.ModuleDict()

    def reseed(self, worker: int) -> None:
        """Draw the ``worker``-th child stream of ``stream_seed`` from now on."""
        seed = np.random.SeedSequence(self.stream_seed, spawn_key=(worker,))
        self.stream = FractalStream(self.systems, self.batch_size, seed=seed)

    def next_batch(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        images, labels = self.stream.next_batch()
        return images, {"labels": labels}

    def heldout(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.held[0], {"labels": self.held[1]}

    def step(self, model: nn.Module, heads: nn.ModuleDict, x: torch.Tensor,
             targets: dict[str, torch.Tensor]) -> Step:
        logits = model(x).float()
        y = targets["labels"]
        return Step(self.loss_fn(logits, y), (logits.argmax(1) == y).float().mean().item())


class SceneTask:
    """Glyph scenes: which glyph classes are present (CLS) and which covers each patch."""

    name = "scenes"
    hub_tag = "e2vpt_glyph_scenes"

    def __init__(self, stream_seed: list, held_seed: list, heldout_size: int,
                 batch_size: int, label_smoothing: float, layout_weight: float = 0.0) -> None:
        if layout_weight < 0:
            raise ValueError(f"layout_weight must be >= 0, not {layout_weight}")
        chars, _ = glyph_bank()
        self.num_classes = len(chars)
        self.layout_weight = layout_weight
        self.batch_size, self.stream_seed = batch_size, stream_seed
        self.rng = np.random.default_rng(np.random.SeedSequence(stream_seed))
        held_rng = np.random.default_rng(np.random.SeedSequence(held_seed))
        self.held = render_scenes(held_rng, heldout_size)
        self.label_smoothing = label_smoothing
        self.data = {
            "generator": "e2vpt_core.pretrain.scenes (DejaVu glyph scenes, no digits)",
            "num_classes": self.num_classes,
            "glyphs": "".join(chars),
            "max_objects": MAX_OBJECTS,
            "targets": "glyph classes present (CLS) + glyph class per 4x4 patch"
            + (f" + {layout_weight:g} x foreground coverage per 2x2 cell (CLS)"
               if layout_weight else ""),
        }

    def extra_heads(self, width: int) -> nn.ModuleDict:
        heads = {"dense": nn.Linear(width, self.num_classes + 1)}
        if self.layout_weight:
            heads["layout"] = nn.Linear(width, (SIZE // LAYOUT_CELL) ** 2)
        return nn.ModuleDict(heads)

    def _targets(self, batch: SceneBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        targets = {"present": batch.present, "patch_labels": batch.patch_labels}
        if self.layout_weight:
            targets["layout"] = batch.layout
        return batch.images, targets

    def reseed(self, worker: int) -> None:
        """Draw the ``worker``-th child stream of ``stream_seed`` from now on."""
        seed = np.random.SeedSequence(self.stream_seed, spawn_key=(worker,))
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._targets(render_scenes(self.rng, self.batch_size))

    def heldout(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._targets(self.held)

    def step(self, model: nn.Module, heads: nn.ModuleDict, x: torch.Tensor,
             targets: dict[str, torch.Tensor]) -> Step:
        tokens = model.forward_features(x)  # (B, 1 + N, d) after the final norm
        logits = model.forward_head(tokens).float()  # (B, classes)
        present = targets["present"]
        soft = present / present.sum(1, keepdim=True).clamp(min=1)
        n_prefix = tokens.shape[1] - targets["patch_labels"].shape[1]
        dense = heads["dense"](tokens[:, n_prefix:]).float()  # (B, N, classes + 1)
        loss = nn.functional.cross_entropy(logits, soft) + nn.functional.cross_entropy(
            dense.flatten(0, 1), targets["patch_labels"].flatten(),
            label_smoothing=self.label_smoothing)
        if self.layout_weight:
            layout = heads["layout"](tokens[:, 0]).float()  # (B, cells)
            loss = loss + self.layout_weight * nn.functional.binary_cross_entropy_with_logits(
                layout, targets["layout"])
        top = logits.argmax(1, keepdim=True)
        return Step(loss, present.gather(1, top).mean().item())


def build_task(name: str, *, num_classes: int, seed: int, parent_steps: int,
               heldout_size: int, batch_size: int, label_smoothing: float,
               layout_weight: float = 0.0):
    """The task called ``name``; a continuation draws new samples, not its parent's."""
    stream_seed, held_seed = [seed, 1, parent_steps], [seed, 2]
    common = {"heldout_size": heldout_size, "batch_size": batch_size,
              "label_smoothing": label_smoothing}
    if name == "fractal":
        if layout_weight:
            raise ValueError("layout_weight applies to --data scenes only")
        task = FractalTask(num_classes, seed, stream_seed, held_seed, **common)
    elif name == "scenes":
        task = SceneTask(stream_seed, held_seed, layout_weight=layout_weight, **common)
    else:
        raise ValueError(f"unknown pretraining data {name!r}; allowed: {', '.join(TASKS)}")
    task.data.update(train_stream_seed=stream_seed, heldout_seed=held_seed,
                     heldout_size=heldout_size, image_size=32)
    return task


class _WorkerBatches(IterableDataset):
    """Endless batches from one data process, on that process's own copy of the task."""

    def __init__(self, task: FractalTask | SceneTask) -> None:
        self.task = task

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        # Ctrl-C and `timeout` signal the whole process group: the training process
        # stops, saves and shuts the workers down, so a worker must not die first.
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, signal.SIG_IGN)
        self.task.reseed(get_worker_info().id)
        while True:
            yield self.task.next_batch()


def _as_is(batch: tuple) -> tuple:
    return batch


def training_batches(task: FractalTask | SceneTask,
                     workers: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The endless training stream.

    ``workers == 0``: drawn in this process (the stream of every shipped leg). Otherwise
    ``workers`` processes render batches, taken in turn, so a GPU is not left waiting on one
    CPU core; worker ``w`` draws child ``w`` of the stream's seed sequence (numpy's
    ``spawn``), so the same seed and number of workers give the same batches in order.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, not {workers}")
    if workers == 0:
        return iter(task.next_batch, None)
    loader = DataLoader(_WorkerBatches(task), batch_size=None, num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=4)
    return iter(loader)
