"""The training budget every compared method gets: a number of epochs, or wall-clock minutes.

With a time budget a method trains until its time is up, checked at epoch boundaries: the clock starts when
its first epoch starts, and after each epoch whose end is past the deadline, that epoch is validated (whatever
``eval_every`` says) and training stops. So a method overruns its budget by at most one epoch plus one
validation, and every method spends about the same wall-clock time on training *and* validation. Early
stopping (``train.patience``) still applies, so a method may stop before its time is up. The number of
epochs is then capped by ``train.epochs`` (``--epochs``), or practically unbounded when only minutes are given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

import torch

#: epoch cap when only a time budget is given (the deadline ends training long before)
UNBOUNDED_EPOCHS = 1_000_000


@dataclass(frozen=True)
class Budget:
    """``epochs`` per method, or ``minutes`` of wall-clock time per method (with ``epochs`` as a cap)."""

    epochs: int
    minutes: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.minutes is None else 60.0 * self.minutes

    def describe(self) -> str:
        if self.minutes is None:
            return f"{self.epochs} epochs per method"
        cap = "" if self.epochs >= UNBOUNDED_EPOCHS else f", at most {self.epochs} epochs"
        return f"{self.minutes:g} wall-clock minutes per method (checked at epoch ends{cap})"


class Deadline:
    """A wall-clock deadline that starts on the first :meth:`start` call."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.ends_at: float | None = None

    def start(self) -> None:
        if self.seconds is not None and self.ends_at is None:
            self.ends_at = time.monotonic() + self.seconds

    def passed(self) -> bool:
        return self.ends_at is not None and time.monotonic() >= self.ends_at


class TimeBudgetTask:
    """Wraps a :class:`~imf_kg.training.TrainingTask` so that the shared :class:`~imf_kg.training.Trainer`
    stops at the first epoch boundary after ``deadline``.

    The trainer validates an epoch when it is the last (``epoch == config.epochs``) and stops after it, reading
    ``config.epochs`` after every epoch; so when an epoch's batches run out past the deadline, this wrapper
    lowers ``train_config.epochs`` (the very object the trainer holds) to that epoch. Everything else is the
    wrapped task's.

    Args:
        task: the wrapped task.
        train_config: the :class:`~imf_kg.training.TrainConfig` given to the trainer (mutated at the deadline).
        deadline: a :class:`Deadline`; started when the first epoch starts.
    """

    def __init__(self, task: Any, train_config, deadline: Deadline):
        self.task = task
        self.train_config = train_config
        self.deadline = deadline
        self.stopped_at_epoch: int | None = None

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        self.deadline.start()
        yield from self.task.train_batches(epoch, generator)
        # runs when the trainer has consumed every batch of this epoch, before it decides to validate
        if self.deadline.passed() and epoch < self.train_config.epochs:
            self.train_config.epochs = epoch
            self.stopped_at_epoch = epoch

    def training_step(self, model, batch):
        return self.task.training_step(model, batch)

    def validate(self, model):
        return self.task.validate(model)

    def __getattr__(self, name: str):  # batch_size_of, example_name, ... of the wrapped task
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)
