"""The training-loop settings shared by link prediction and node classification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from imf_kg.errors import ConfigError


@dataclass
class TrainConfig:
    """Settings of :class:`~imf_kg.training.Trainer`; a YAML section maps onto it via :mod:`imf_kg.config`.

    Attributes:
        epochs: number of passes over the training batches.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"auto"`` (bf16 autocast on CUDA, off on CPU), ``"bf16"`` (forced) or ``"off"``.
        seed: seeds Python, NumPy, torch and the data-order generator.
        grad_clip: maximum total gradient norm (``None``: no clipping).
        eval_every: validate every this many epochs (and always after the last epoch).
        metric: validation metric to select the best epoch on, a key of ``task.validate``'s dict
            (e.g. ``"mrr"``, ``"macro_f1"``, ``"fused/mrr"``).
        mode: ``"max"`` when a larger ``metric`` is better, ``"min"`` when smaller is.
        patience: stop after this many evaluations without improvement (``None``: never stop early).
        min_delta: an evaluation improves only if it beats the best by more than this.
        checkpoint_every: write ``checkpoints/last.pt`` every this many epochs (and at the end).
        progress: show a tqdm bar per epoch (only on a terminal).
        stop_after_epoch: return right after this epoch's checkpoint, as if interrupted (used by tests).
        amp_validation: also autocast during validation; off by default because bf16 scores create rank ties.
        deterministic: cheap deterministic kernel choices (see :func:`seed_everything`).
        curve_min_interval_s: redraw ``training_curve.png`` at an evaluation only if the last drawing is at least
            this old (drawing takes ~0.5 s, more than a small epoch); it is always redrawn when ``fit`` returns.
            ``0`` redraws at every evaluation.
        sync_batch_norm: data-parallel runs only (torchrun): batch norm uses the statistics of the global batch
            over all processes, as one process would (:class:`~imf_kg.training.global_batch_norm.GlobalBatchNorm`);
            ``False`` keeps per-process statistics (fewer collectives, results then depend on the process count).
        ddp_graph: data-parallel runs only: ``"static"`` when the set of parameters that get a gradient is the same
            at every step (DistributedDataParallel finds unused ones, e.g. IMF's decision weights with
            ``joint_loss: false``, at the first step only), ``"dynamic"`` when it can change from step to step
            (searched at every step, slower).
    """

    epochs: int = 1
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    seed: int = 0
    grad_clip: Optional[float] = None
    eval_every: int = 1
    metric: str = "mrr"
    mode: Literal["max", "min"] = "max"
    patience: Optional[int] = None
    min_delta: float = 0.0
    checkpoint_every: int = 1
    progress: bool = True
    stop_after_epoch: Optional[int] = None
    amp_validation: bool = False
    deterministic: bool = True
    curve_min_interval_s: float = 10.0
    sync_batch_norm: bool = True
    ddp_graph: Literal["static", "dynamic"] = "static"

    def __post_init__(self):
        for name in ("epochs", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, found {getattr(self, name)!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience: expected an integer >= 1 or null, found {self.patience!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip: expected a positive number or null, found {self.grad_clip!r}")
        if self.curve_min_interval_s < 0:
            raise ConfigError(f"curve_min_interval_s: expected a number >= 0, found {self.curve_min_interval_s!r}")
        if self.min_delta < 0:
            raise ConfigError(f"min_delta: expected a number >= 0, found {self.min_delta!r}")
        if self.stop_after_epoch is not None and self.stop_after_epoch < 1:
            raise ConfigError(f"stop_after_epoch: expected an integer >= 1 or null, found {self.stop_after_epoch!r}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode: expected 'max' or 'min', found {self.mode!r}")
        if self.ddp_graph not in ("static", "dynamic"):
            raise ConfigError(f"ddp_graph: expected 'static' or 'dynamic', found {self.ddp_graph!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"amp: expected one of auto, bf16, off, found {self.amp!r}")
