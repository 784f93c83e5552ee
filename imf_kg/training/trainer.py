"""The shared training loop: one :class:`Trainer` drives any :class:`~imf_kg.training.TrainingTask`.

Per epoch: train on the task's batches (bf16 autocast on CUDA, optional gradient clipping, scheduler
steps), validate every ``eval_every`` epochs, keep ``checkpoints/best.pt`` when the selection metric
improves, stop early when it has not improved for ``patience`` evaluations, append a line to
``metrics.jsonl``, redraw ``training_curve.png``, and write the resumable ``checkpoints/last.pt``.

Files in the run folder::

    run_dir/metrics.jsonl            one JSON record per epoch (rewritten from the checkpoint on resume)
    run_dir/training_curve.png       train loss and validation metrics per epoch
    run_dir/checkpoints/last.pt      everything needed to resume exactly (see imf_kg.training.checkpoint)
    run_dir/checkpoints/best.pt      model state_dict of the best validation epoch
    run_dir/checkpoints/best.json    that epoch and its validation metrics

Data parallelism: under ``torchrun`` (a process group of several processes, see
:mod:`imf_kg.training.distributed`) the same loop trains with DistributedDataParallel. Each rank trains on
its slice of every global batch with its loss scaled by its share of the batch, batch norm uses global
statistics, logged losses are those of the global batch, validation is the task's (sharded for link
prediction) with rank 0's metrics broadcast so that every decision is identical, and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imf_kg.errors import ConfigError, ToolkitError
from imf_kg.io import append_jsonl, atomic_write_text
from imf_kg.training import checkpoint as ckpt
from imf_kg.training import distributed
from imf_kg.training.curves import VALID_PREFIX, plot_training_curve
from imf_kg.training.device import (
    autocast,
    autocast_dtype,
    is_main_process,
    resolve_device,
    seed_everything,
    synchronize,
)
from imf_kg.training.early_stopping import EarlyStopping
from imf_kg.training.task import TrainingTask, batch_size_of
from imf_kg.training.train_config import TrainConfig

logger = logging.getLogger("imf_kg.training")

# The data-order generator gets its own stream, distinct from the global torch one (dropout), so that
# changing the model (and hence its random draws) does not change the data order.
DATA_SEED_OFFSET = 7919


class TrainingDivergedError(ToolkitError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        best_epoch: epoch of the best validation value of ``config.metric`` (``None`` if never validated).
        best_metrics: all validation metrics of that epoch.
        history: one record per completed epoch, as in ``metrics.jsonl``.
        stopped_early: patience ran out before ``config.epochs``.
        interrupted: returned because of ``config.stop_after_epoch``; ``fit(resume=True)`` continues.
        last_epoch: the last completed epoch.
    """

    best_epoch: int | None
    best_metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
    last_epoch: int = 0


class Trainer:
    """Trains ``model`` on ``task`` with ``optimizer``; see the module docstring for the files it keeps.

    Args:
        model: any ``nn.Module``; moved to ``config.device`` here (the optimiser keeps its parameters, as
            ``Module.to`` moves them in place).
        task: a :class:`~imf_kg.training.TrainingTask`.
        optimizer: built over ``model.parameters()``.
        config: the :class:`~imf_kg.training.TrainConfig`.
        run_dir: folder of this run's files; created when missing.
        scheduler: optional learning-rate scheduler; ``ReduceLROnPlateau`` is stepped with the selection
            metric after each validation.
        step_scheduler: ``"epoch"`` (once per epoch) or ``"batch"`` (after every optimiser step).
    """

    def __init__(
        self,
        model: nn.Module,
        task: TrainingTask,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        run_dir: str | Path,
        scheduler: Any = None,
        step_scheduler: str = "epoch",
    ):
        if step_scheduler not in ("epoch", "batch"):
            raise ConfigError(f"step_scheduler: expected 'epoch' or 'batch', found {step_scheduler!r}")
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and step_scheduler == "batch":
            raise ConfigError("step_scheduler: ReduceLROnPlateau needs validation metrics; use 'epoch'")
        self.config = config
        self.device = distributed.local_device(resolve_device(config.device))
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        self.distributed = distributed.is_distributed()
        if self.distributed and config.sync_batch_norm:
            distributed.use_global_batch_norm(model)  # same parameter objects: the optimiser still holds them
        self.model = model.to(self.device)
        self._training_step = None  # DistributedDataParallel wrapper of the task's step, built by fit
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.step_scheduler = step_scheduler
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.curve_path = self.run_dir / "training_curve.png"
        self.data_generator = torch.Generator()
        self._reset_state()

    # ------------------------------------------------------------------------------------------- public
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``config.epochs``, early stopping, or ``config.stop_after_epoch``.

        With ``resume=True`` the run continues from ``checkpoints/last.pt`` exactly where it stopped (on the
        CPU the final parameters and metrics equal an uninterrupted run's bit for bit). A fresh fit
        (``resume=False``) replaces the trainer's files in ``run_dir``; refusing to reuse a folder is the
        command line's job (``--overwrite``).
        """
        config = self.config
        # rank 0 (and a single process) draws the configured stream; other ranks their own (dropout masks)
        seed_everything(distributed.rank_seed(config.seed), deterministic=config.deterministic)
        self.data_generator.manual_seed(config.seed + DATA_SEED_OFFSET)  # the same global order on every rank
        if resume:
            self._resume()
        else:
            self._start_fresh()
        if self.distributed:
            self._start_data_parallel()
        self._curve_drawn_at = time.monotonic()  # the first drawing waits for curve_min_interval_s too
        while not self.early_stopping.stopped and self.epoch < config.epochs:
            epoch = self.epoch + 1
            record = self._train_one_epoch(epoch)
            evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
            if evaluated:
                self._validate(epoch, record)
            if self.scheduler is not None and self.step_scheduler == "epoch":
                if not self.plateau:
                    self.scheduler.step()
                elif evaluated:
                    self.scheduler.step(record[VALID_PREFIX + config.metric])
            self.history.append(record)
            self.epoch = epoch
            self._log_epoch(record, evaluated)
            interrupt = config.stop_after_epoch == epoch and epoch < config.epochs
            finished = self.early_stopping.stopped or epoch == config.epochs
            if epoch % config.checkpoint_every == 0 or finished or interrupt:
                self._save_last()
            if interrupt and not finished:
                logger.info("stopping after epoch %d as asked (stop_after_epoch); fit(resume=True) continues", epoch)
                self._refresh_curve(force=True)
                distributed.barrier()
                return self._result(interrupted=True)
        self._refresh_curve(force=True)
        distributed.barrier()  # rank 0's last files exist before any rank goes on to read them (load_best)
        return self._result(interrupted=False)

    def load_best(self) -> nn.Module:
        """Load ``checkpoints/best.pt`` (the best validation epoch) into the model and return the model."""
        state = ckpt.load_checkpoint(self.checkpoint_dir / ckpt.BEST, map_location=self.device)
        self._load_model_state(state, self.checkpoint_dir / ckpt.BEST)
        return self.model

    # ------------------------------------------------------------------------------------------- epochs
    def _train_one_epoch(self, epoch: int) -> dict[str, Any]:
        config, model, optimizer = self.config, self.model, self.optimizer
        model.train()
        learning_rate = optimizer.param_groups[0]["lr"]
        # summed on the device so that the loop never waits for the GPU inside an epoch
        loss_sum = torch.zeros((), device=self.device)
        grad_norm_sum = torch.zeros((), device=self.device)
        log_sums: dict[str, Any] = {}
        batches = examples = 0
        start = time.perf_counter()
        progress = _progress_bar(
            self.task.train_batches(epoch, self.data_generator),
            desc=f"epoch {epoch}/{config.epochs}",
            enabled=config.progress and is_main_process(),
        )
        for batch in progress:
            examples += batch_size_of(self.task, batch) or 0
            weight, shard = 1.0, None
            if self.distributed:
                shard = distributed.shard_batch(self.task, batch, self.rank, self.world_size)
                batch, weight = shard.batch, shard.weight
            optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp_dtype), distributed.placeholder_step(shard is not None and
                                                                                      shard.placeholder):
                if self._training_step is not None:
                    loss, logs = self._training_step(batch)
                else:
                    loss, logs = self.task.training_step(model, batch)
            if self.distributed:
                # DDP averages gradients over ranks: scaled by n_k W / B they average to the global-batch gradient
                (loss * (weight * self.world_size)).backward()
            else:
                loss.backward()
            if config.grad_clip is not None:
                grad_norm_sum += nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip).float()
            optimizer.step()
            if self.scheduler is not None and self.step_scheduler == "batch":
                self.scheduler.step()
            # under data parallelism each rank adds its share; the shares are summed over ranks below
            loss_sum += loss.detach().float() if weight == 1.0 else loss.detach().float() * weight
            for name, value in (logs or {}).items():
                # tensor logs stay on the device until the epoch ends (a float() here would wait for the GPU)
                value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
                log_sums[name] = log_sums.get(name, 0.0) + (value if weight == 1.0 else value * weight)
            batches += 1
        if batches == 0:
            raise ToolkitError(f"epoch {epoch}: the task produced no training batches; check the training split")
        if self.distributed:
            loss_sum, log_sums = self._sum_over_ranks(loss_sum, log_sums)
            if not self.config.sync_batch_norm:
                distributed.sync_persistent_buffers(model)  # per-shard BN statistics: keep rank 0's everywhere
        synchronize(self.device)
        seconds = time.perf_counter() - start
        train_loss = float(loss_sum) / batches
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"epoch {epoch}: training loss is {train_loss}; lower the learning rate or set grad_clip "
                f"(the last checkpoint in {self.checkpoint_dir} is from before this epoch)"
            )
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        record.update({f"train/{name}": float(total) / batches for name, total in log_sums.items()})
        if config.grad_clip is not None:
            record["grad_norm"] = float(grad_norm_sum) / batches  # before clipping
        record.update({"lr": float(learning_rate), "batches": batches, "train_time_s": seconds})
        if examples:
            unit = getattr(self.task, "example_name", "examples")
            record[unit] = examples
            record[f"{unit}_per_s"] = examples / seconds if seconds > 0 else float("inf")
        return record

    def _validate(self, epoch: int, record: dict[str, Any]) -> None:
        config = self.config
        self.model.eval()
        start = time.perf_counter()
        # no_grad rather than inference_mode: caches a model builds during validation stay usable in training
        with torch.no_grad(), autocast(self.device, self.amp_dtype if config.amp_validation else None):
            raw = self.task.validate(self.model)
        synchronize(self.device)
        seconds = time.perf_counter() - start
        self.model.train()
        metrics = _as_float_metrics(raw)
        # every rank decides (best epoch, early stop, plateau) on exactly rank 0's numbers
        metrics = distributed.broadcast_object(metrics)
        if config.metric not in metrics:
            raise ConfigError(
                f"metric: {config.metric!r} is not a validation metric of this task; "
                f"expected one of {', '.join(sorted(metrics)) or '(none returned)'}"
            )
        improved = self.early_stopping.update(epoch, metrics[config.metric], metrics)
        record.update({VALID_PREFIX + name: value for name, value in metrics.items()})
        record["valid_time_s"] = seconds
        record["is_best"] = improved
        if improved and is_main_process():
            ckpt.save_best(self.checkpoint_dir, ckpt.cpu_state_dict(self.model), epoch, metrics)

    # ------------------------------------------------------------------------------------- persistence
    def _reset_state(self) -> None:
        config = self.config
        self.early_stopping = EarlyStopping(config.mode, config.patience, config.min_delta)
        self.history: list[dict] = []
        self.epoch = 0
        self._curve_stale = False
        self._curve_drawn_at = 0.0

    def _start_fresh(self) -> None:
        self._reset_state()
        if not is_main_process():
            return
        stale = [self.checkpoint_dir / n for n in (ckpt.LAST, ckpt.BEST, ckpt.BEST_INFO)]
        stale += [self.metrics_path, self.curve_path]
        if (self.checkpoint_dir / ckpt.LAST).exists():
            logger.warning("%s: starting a fresh run over an earlier one (fit(resume=True) would continue it)",
                           self.run_dir)
        for path in stale:
            path.unlink(missing_ok=True)
        ckpt.remove_temporary_files(self.checkpoint_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _save_last(self) -> None:
        rng = ckpt.capture_rng_state(self.data_generator)
        rng_per_rank = distributed.all_gather_objects(rng) if self.distributed else None
        if not is_main_process():
            return
        extra = {"rng_per_rank": rng_per_rank} if rng_per_rank is not None else {}
        ckpt.save_last(self.checkpoint_dir / ckpt.LAST, {
            "epoch": self.epoch,
            "model": ckpt.cpu_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng,
            "early_stopping": self.early_stopping.state_dict(),
            "history": self.history,
            "config": asdict(self.config),
            **extra,
        })

    def _resume(self) -> None:
        path = self.checkpoint_dir / ckpt.LAST
        state = ckpt.load_checkpoint(path, map_location="cpu")
        if state.get("format") != ckpt.CHECKPOINT_FORMAT:
            raise ckpt.CheckpointError(f"{path}: checkpoint format {state.get('format')!r}; expected "
                                       f"{ckpt.CHECKPOINT_FORMAT}")
        self._reset_state()
        self._load_model_state(state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ckpt.CheckpointError(f"{path}: optimizer state does not fit this optimizer ({err})") from None
        if self.scheduler is not None:
            if state["scheduler"] is None:
                raise ckpt.CheckpointError(f"{path}: saved without a scheduler; expected scheduler state")
            self.scheduler.load_state_dict(state["scheduler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self._restore_rng(state)
        if is_main_process():
            ckpt.remove_temporary_files(self.checkpoint_dir)  # left by a process killed while writing
            # the log may hold epochs trained after this checkpoint; they are about to be trained again
            lines = "".join(_json_line(record) for record in self.history)
            atomic_write_text(self.metrics_path, lines)
            self._curve_stale = any(r.get("is_best") is not None for r in self.history)
        logger.info("resumed %s at epoch %d", self.run_dir, self.epoch)

    def _restore_rng(self, state: dict) -> None:
        per_rank = state.get("rng_per_rank") or []
        if len(per_rank) == self.world_size and self.world_size > 1:
            ckpt.restore_rng_state(per_rank[self.rank], self.data_generator)
            return
        ckpt.restore_rng_state(state["rng"], self.data_generator)  # rank 0's, including the data order
        if self.world_size > 1 or len(per_rank) > 1:
            logger.warning("resuming with %d process(es) a run saved with %d: the data order continues exactly, "
                           "dropout masks do not", self.world_size, max(len(per_rank), 1))
            if self.rank > 0:  # keep the ranks' own streams distinct
                seed_everything(distributed.rank_seed(self.config.seed + self.epoch), self.config.deterministic)

    def _start_data_parallel(self) -> None:
        """Wrap the task's step in DistributedDataParallel and check that every rank starts from one state."""
        distributed.check_same_across_ranks("the training state (epoch, data order, early stopping, config)", {
            "epoch": self.epoch,
            "data_order": self.data_generator.get_state().numpy().tobytes(),
            "early_stopping": self.early_stopping.state_dict(),
            "config": asdict(self.config),
        })
        if self._training_step is None:  # one wrapper per trainer: a second would hook the same parameters again
            self._training_step = distributed.data_parallel(self.model, self.task, self.device,
                                                            static_graph=self.config.ddp_graph == "static")

    def _sum_over_ranks(self, loss_sum: torch.Tensor, log_sums: dict[str, Any]):
        names = sorted(log_sums)
        packed = torch.stack([loss_sum.float()] + [
            torch.as_tensor(log_sums[name], dtype=torch.float32, device=self.device) for name in names
        ])
        torch.distributed.all_reduce(packed)
        return packed[0], {name: packed[i + 1] for i, name in enumerate(names)}

    @property
    def rank(self) -> int:
        return distributed.get_rank()

    @property
    def world_size(self) -> int:
        return distributed.get_world_size()

    def _load_model_state(self, state: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ckpt.CheckpointError(f"{path}: parameters do not fit this model ({first})") from None

    # ---------------------------------------------------------------------------------------- reporting
    def _log_epoch(self, record: dict[str, Any], evaluated: bool) -> None:
        if not is_main_process():
            return
        append_jsonl(self.metrics_path, record)
        if evaluated:
            self._curve_stale = True
            self._refresh_curve(force=False)
        message = f"epoch {record['epoch']}/{self.config.epochs} loss {record['train_loss']:.4f}"
        if evaluated:
            value = record[VALID_PREFIX + self.config.metric]
            message += f" valid {self.config.metric} {value:.4f}" + (" (best)" if record["is_best"] else "")
        logger.info(message)

    def _refresh_curve(self, force: bool) -> None:
        if not (is_main_process() and self._curve_stale):
            return
        now = time.monotonic()
        if force or now - self._curve_drawn_at >= self.config.curve_min_interval_s:
            plot_training_curve(self.history, self.curve_path, self.config.metric)
            self._curve_drawn_at = time.monotonic()
            self._curve_stale = False

    def _result(self, interrupted: bool) -> TrainResult:
        return TrainResult(
            best_epoch=self.early_stopping.best_epoch,
            best_metrics=dict(self.early_stopping.best_metrics),
            history=list(self.history),
            stopped_early=self.early_stopping.stopped,
            interrupted=interrupted,
            last_epoch=self.epoch,
        )


def _as_float_metrics(raw: dict) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError(f"task.validate must return a dict of floats, not {type(raw).__name__}")
    metrics = {}
    for name, value in raw.items():
        try:
            metrics[str(name)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"task.validate returned {name!r} = {value!r}; expected a number") from None
    return metrics


def _json_line(record: dict) -> str:
    return json.dumps(record) + "\n"


def _progress_bar(iterable, desc: str, enabled: bool):
    from tqdm import tqdm

    # disable=None lets tqdm hide itself when stderr is not a terminal (logs, CI)
    return tqdm(iterable, desc=desc, leave=False, disable=None if enabled else True, dynamic_ncols=True)
