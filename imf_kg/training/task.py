"""The protocol a training task implements so that :class:`~imf_kg.training.Trainer` can drive it.

A task owns the data side of training: which batches an epoch has, how a batch becomes a loss, and how a
model is validated. The trainer owns everything else (device, precision, optimiser steps, clipping,
checkpoints, early stopping, logs). Link prediction (:class:`~imf_kg.training.OneToNTask`) and node
classification both plug in here.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainingTask(Protocol):
    """What the training loop needs from a task.

    Optionally a task also defines ``batch_size_of(batch) -> int`` (examples in a batch), which the
    trainer uses to log examples (queries, nodes) per second.
    """

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The batches of epoch ``epoch`` (1-based).

        ``generator`` must be the only source of data-order randomness (shuffling, sampling): the trainer
        checkpoints its state, which is what makes a resumed run identical to an uninterrupted one.
        """
        ...

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of ``batch`` (with autograd history) and named logs (e.g. per-modality losses).

        Called inside the trainer's autocast context; the task moves the batch to the model's device. Log
        values may be floats or 0-d tensors; tensors are averaged on the device, which spares a GPU sync
        per batch.
        """
        ...

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics by name; the trainer calls it with the model in eval mode, without gradients."""
        ...


def batch_size_of(task: Any, batch: Any) -> int | None:
    """Examples in ``batch`` according to ``task.batch_size_of``; ``None`` if the task does not say."""
    size_of = getattr(task, "batch_size_of", None)
    return int(size_of(batch)) if callable(size_of) else None
