"""Best-epoch tracking and early stopping on one validation metric."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class EarlyStopping:
    """Tracks the best value of a validation metric and counts evaluations without improvement.

    Ties do not count as improvements, so the earliest of equally good epochs is kept (a later epoch has
    trained longer for no measured gain). A NaN metric never improves.

    Attributes:
        mode: ``"max"`` or ``"min"``.
        patience: evaluations without improvement before stopping (``None``: never stop).
        min_delta: an improvement must exceed the best value by more than this.
        best_value, best_epoch, best_metrics: the best evaluation so far (``None`` / empty before any).
        bad_evaluations: consecutive evaluations since the last improvement.
        stopped: whether patience has run out.
    """

    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)
    bad_evaluations: int = 0
    stopped: bool = False

    def is_improvement(self, value: float) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, epoch: int, value: float, metrics: dict) -> bool:
        """Record one evaluation; returns whether it is the new best."""
        improved = self.is_improvement(value)
        if improved:
            self.best_value = float(value)
            self.best_epoch = int(epoch)
            self.best_metrics = dict(metrics)
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
            if self.patience is not None and self.bad_evaluations >= self.patience:
                self.stopped = True
        return improved

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore the tracked best and counters; mode, patience and min_delta stay as configured now."""
        for key in ("best_value", "best_epoch", "best_metrics", "bad_evaluations"):
            setattr(self, key, state[key])
        # recomputed rather than restored, so a resumed run may raise the patience and go on
        self.stopped = self.patience is not None and self.bad_evaluations >= self.patience
