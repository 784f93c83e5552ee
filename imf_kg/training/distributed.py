"""Data-parallel training over several processes (``torchrun``), and the helpers that keep ranks in step.

Launch any training command under ``torchrun``; nothing else changes::

    torchrun --nproc_per_node 4 -m imf_kg train --config configs/imf/umls.yaml

:func:`init_distributed` joins the process group that torchrun describes in its environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when training on CUDA (process k on
GPU ``LOCAL_RANK``), gloo on the CPU. Multi-node runs use torchrun's own rendezvous flags.

What makes a data-parallel run equal to one process with the same (global) batch:

* Data order. ``batch_size`` is the global batch. Every rank draws the same global order from the trainer's
  data generator (same seed, same state in checkpoints), and rank k trains on the k-th contiguous slice
  (``torch.tensor_split``) of every global batch, so the order does not depend on the number of processes.
* Loss and gradients. Rank k's loss, a mean over its ``n_k`` examples, is scaled by ``n_k * W / B`` before
  ``backward``; DistributedDataParallel averages gradients over the ``W`` ranks, which gives the gradient of the
  mean over the whole global batch even when shards are uneven. This is exact for losses that are means of
  per-example terms (1-N BCE, cross-entropy); a term that couples the examples of a batch (IMF's InfoNCE over
  the batch's distinct entities) is computed within each shard.
* Batch norm. Layers are replaced by :class:`~imf_kg.training.global_batch_norm.GlobalBatchNorm`, whose
  statistics and gradients are those of the global batch (``TrainConfig.sync_batch_norm``; with it off,
  statistics are per shard and rank 0's running statistics are copied to all ranks after every epoch).
* Dropout. Each rank draws its own masks: rank 0 the single-process stream, rank k the stream of seed
  ``seed + k * RANK_SEED_STRIDE``. Masks of a shard therefore differ from those one process would draw; the
  runs agree in distribution, not bit for bit. Equality tests switch dropout off.
* A shard with no example (a last global batch smaller than the number of ranks) is replaced by a
  zero-weight placeholder (the batch's first example), so every rank joins every collective; it adds nothing
  to gradients or batch-norm statistics.
* Evaluation. Each rank ranks a contiguous slice of the queries; the ranks are gathered in order and every
  rank computes the same metrics as one process (:func:`evaluate_link_prediction`). The trainer then
  broadcasts rank 0's validation metrics, so early stopping and best-epoch decisions are identical.

Only rank 0 writes checkpoints, metrics, plots and results; every rank reads the same run folder on resume.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from imf_kg import errors
from imf_kg.errors import ConfigError, ToolkitError
from imf_kg.training.device import resolve_device
from imf_kg.training.global_batch_norm import GlobalBatchNorm, placeholder_step, use_global_batch_norm

logger = logging.getLogger("imf_kg.training")

T = TypeVar("T")
TIMEOUT_ENV = "IMF_KG_DIST_TIMEOUT_S"
# Collectives wait this long by default; generous because rank 0 may encode features while the others wait.
DEFAULT_TIMEOUT_S = 3600
# Rank k's dropout/sampling stream is seeded with seed + k * RANK_SEED_STRIDE (rank 0: the single-process one).
RANK_SEED_STRIDE = 1_000_003
# With GlobalBatchNorm the backward pass has collectives of its own; one gradient bucket, reduced after the
# whole backward pass, keeps DDP's all-reduce after them on every rank whatever order autograd chooses.
SINGLE_BUCKET_MB = 1 << 20
_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

__all__ = [
    "GlobalBatchNorm", "Shard", "all_gather_objects", "barrier", "broadcast_object", "check_same_across_ranks",
    "data_parallel", "distributed_session", "evaluate_link_prediction", "get_rank", "get_world_size",
    "init_distributed", "is_distributed", "launched_distributed", "local_device", "main_first", "on_main",
    "placeholder_step", "rank_seed", "shard_batch", "shutdown_distributed", "sync_persistent_buffers",
    "use_global_batch_norm",
]


# ---------------------------------------------------------------------------------------- process group
def launched_distributed() -> bool:
    """True when this process was started by torchrun (or similar) as one of several (``WORLD_SIZE > 1``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}; expected an integer") from None


def is_distributed() -> bool:
    """A process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_distributed(device: str | torch.device = "auto", timeout_s: float | None = None) -> bool:
    """Join torchrun's process group if this process is one of several; returns whether it initialised one.

    NCCL when ``device`` resolves to CUDA (and this process's GPU becomes ``cuda:LOCAL_RANK``), else gloo.
    Does nothing for a single process or when a group already exists.

    Raises:
        ConfigError: torchrun's variables are incomplete, or there are fewer GPUs than local processes.
    """
    if not launched_distributed() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ToolkitError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [name for name in _REQUIRED_ENV if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE > 1 but {', '.join(missing)} unset; launch with torchrun --nproc_per_node N")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                              "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    timeout = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout))
    logger.info("rank %d of %d (%s, local rank %d)", dist.get_rank(), dist.get_world_size(),
                dist.get_backend(), local_rank)
    return True


def shutdown_distributed(synchronise: bool = True) -> None:
    """Leave the process group. With ``synchronise`` every rank first waits for the others (a barrier), so that
    no rank tears its connections down while a peer still talks to it: gloo's transport threads can abort a
    process at exit ("terminate called without an active exception") when a peer vanishes mid-exchange. Pass
    ``synchronise=False`` on an error path, where a peer may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if synchronise:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: str | torch.device = "auto"):
    """``init_distributed`` on entry and, if it started the group, ``shutdown_distributed`` on exit (with the
    closing barrier only when the body finished without an error)."""
    started = init_distributed(device)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if started:
            shutdown_distributed(synchronise=not failed)


def local_device(device: torch.device) -> torch.device:
    """Under data parallelism, a CUDA device means this process's GPU (``cuda:LOCAL_RANK``)."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def rank_seed(seed: int, rank: int | None = None) -> int:
    """The seed of rank ``rank``'s own random stream (dropout): ``seed`` on rank 0, distinct on the others."""
    rank = get_rank() if rank is None else rank
    return int(seed) + int(rank) * RANK_SEED_STRIDE


# ----------------------------------------------------------------------------------------- collectives
def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; unchanged without a process group)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def check_same_across_ranks(what: str, value: Any) -> None:
    """Raise :class:`ToolkitError` (on every rank) unless ``value`` pickles identically on all ranks."""
    if not is_distributed():
        return
    digest = hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    digests = all_gather_objects(digest)
    if len(set(digests)) > 1:
        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        raise ToolkitError(f"{what} differs between rank 0 and rank(s) {differing}; expected every rank to "
                           "start from the same state (same config, run folder and code)")


def on_main(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on rank 0 only and hand its (picklable) result to every rank.

    An exception on rank 0 is raised again on every rank (as the same :mod:`imf_kg.errors` class when it is
    one, else :class:`ToolkitError`), so no rank is left waiting.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    return _rank0_then_broadcast(fn, args, kwargs, share_result=True)


def main_first(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on rank 0, then, once it has succeeded, on the other ranks; returns each rank's result.

    For work that caches its result on disk (feature caches, structure vectors in the run folder): the other
    ranks then find rank 0's file instead of computing it again. Errors propagate as in :func:`on_main`.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    result = _rank0_then_broadcast(fn, args, kwargs, share_result=False)
    return result if get_rank() == 0 else fn(*args, **kwargs)


def _rank0_then_broadcast(fn, args, kwargs, share_result: bool):
    """Rank 0 runs ``fn`` and broadcasts its outcome; other ranks receive it (rank 0's error raised again).

    Returns rank 0's result on rank 0, and on the other ranks the broadcast result (``None`` when not shared).
    """
    if get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:
            broadcast_object(("error", type(err).__name__, str(err)))
            raise
        broadcast_object(("ok", result if share_result else None))
        return result
    outcome = broadcast_object(None)
    if outcome[0] == "error":
        raise _error_like(outcome[1], outcome[2])
    return outcome[1]


def _error_like(class_name: str, message: str) -> ToolkitError:
    cls = getattr(errors, class_name, None)
    if isinstance(cls, type) and issubclass(cls, ToolkitError) and cls is not errors.DataFormatError:
        return cls(message)
    return ToolkitError(f"rank 0 failed: {message}" if message else f"rank 0 failed ({class_name})")


def sync_persistent_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s persistent buffers (e.g. batch-norm running statistics) to every rank.

    Non-persistent buffers (frozen feature matrices, rebuilt from the data on every rank) are left alone:
    broadcasting them would cost far more than they can differ.
    """
    if not is_distributed():
        return
    for module in model.modules():
        skipped = getattr(module, "_non_persistent_buffers_set", set())
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in skipped:
                dist.broadcast(buffer, src=src)


# -------------------------------------------------------------------------------------------- sharding
@dataclass
class Shard:
    """This rank's part of a global batch.

    Attributes:
        batch: the examples this rank trains on (a placeholder example when its part is empty).
        weight: ``n_k / B``, its share of the global batch's examples (0 for a placeholder).
        placeholder: the shard is a zero-weight stand-in (see the module docstring).
    """

    batch: Any
    weight: float
    placeholder: bool = False


def shard_batch(task: Any, batch: Any, rank: int, world_size: int) -> Shard:
    """Rank ``rank``'s contiguous slice of the global ``batch``.

    A task may define ``shard_batch(batch, rank, world_size) -> (shard, weight)`` for batches that are not
    tensors split along their first dimension (it must then never return an empty shard: give one example a
    weight of 0 instead). Otherwise tensors, tuples/lists of tensors and dicts of tensors with a common first
    dimension are split with ``torch.tensor_split``.
    """
    custom = getattr(task, "shard_batch", None)
    if callable(custom):
        shard, weight = custom(batch, rank, world_size)
        return Shard(shard, float(weight), placeholder=float(weight) == 0.0)
    size = _first_dim(batch)
    if size == 0:
        raise ToolkitError("the task produced an empty training batch; expected at least one example")
    start, stop = _slice_bounds(size, rank, world_size)
    if stop > start:
        return Shard(_take(batch, start, stop), (stop - start) / size)
    return Shard(_take(batch, 0, 1), 0.0, placeholder=True)


def _slice_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``rank`` of ``size`` items split as ``torch.tensor_split`` does."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _first_dim(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else _unshardable(batch)
    if isinstance(batch, Mapping):
        sizes = {_first_dim(value) for value in batch.values()}
    elif isinstance(batch, (list, tuple)) and batch:
        sizes = {_first_dim(value) for value in batch}
    else:
        return _unshardable(batch)
    if len(sizes) != 1:
        return _unshardable(batch)
    return sizes.pop()


def _take(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return type(batch)((key, _take(value, start, stop)) for key, value in batch.items())
    parts = [_take(value, start, stop) for value in batch]
    return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)


def _unshardable(batch: Any) -> int:
    raise ConfigError(f"training batches of type {type(batch).__name__} cannot be split across processes; "
                      "expected tensors with the examples along dim 0, or a task method "
                      "shard_batch(batch, rank, world_size) -> (shard, weight)")


# ------------------------------------------------------------------------------------------------- DDP
class TrainingStep(nn.Module):
    """A task's training step as a module: DistributedDataParallel synchronises gradients only for work done
    inside the forward of the module it wraps, and tasks call ``model.loss`` rather than ``model(...)``."""

    def __init__(self, model: nn.Module, task: Any):
        super().__init__()
        self.model = model
        object.__setattr__(self, "task", task)  # never a submodule: DDP must see each parameter once

    def forward(self, batch: Any):
        return self.task.training_step(self.model, batch)


def data_parallel(model: nn.Module, task: Any, device: torch.device, static_graph: bool = True):
    """``DistributedDataParallel(TrainingStep(model, task))``: call it with a shard, get ``(loss, logs)``.

    ``static_graph``: the parameters that get gradients are the same at every step (unused ones are found at
    the first step); otherwise they are searched for at every step (``find_unused_parameters``).

    Parameters and buffers are copied from rank 0 once, here; buffers are not broadcast at every forward
    (that would include frozen feature matrices): batch-norm statistics are global (:class:`GlobalBatchNorm`)
    or copied after each epoch (:func:`sync_persistent_buffers`).
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    kwargs: dict[str, Any] = {}
    if any(isinstance(module, GlobalBatchNorm) for module in model.modules()):
        kwargs["bucket_cap_mb"] = SINGLE_BUCKET_MB
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        kwargs["forward_sync_buffers"] = False  # newer torch: still syncs at construction
    else:
        kwargs["broadcast_buffers"] = False  # older torch: the same meaning
    return DistributedDataParallel(
        TrainingStep(model, task),
        device_ids=[device.index] if device.type == "cuda" else None,
        static_graph=static_graph,
        find_unused_parameters=not static_graph,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_link_prediction(model_or_score_fn, kg, split: str = "valid", restrict_to=None,
                             return_ranks: bool = False, progress: bool = True, **kwargs):
    """:func:`imf_kg.evaluation.evaluate_link_prediction`, sharded over the ranks when data-parallel.

    Rank k ranks the k-th contiguous slice of the queries; ranks and query positions are gathered in order
    and every rank aggregates them, so every rank returns the metrics one process would (same arguments,
    same result type: output name -> :class:`~imf_kg.evaluation.RankMetrics`).
    """
    from imf_kg.evaluation import RankMetrics
    from imf_kg.evaluation import evaluate_link_prediction as evaluate

    if not is_distributed():
        return evaluate(model_or_score_fn, kg, split=split, restrict_to=restrict_to, return_ranks=return_ranks,
                        progress=progress, **kwargs)
    rank, world_size = get_rank(), get_world_size()
    num_queries = len(kg.queries(split))
    positions = _query_positions(restrict_to, num_queries)
    start, stop = _slice_bounds(len(positions), rank, world_size)
    mine = positions[start:stop]
    local = {}
    if len(mine):
        local = evaluate(model_or_score_fn, kg, split=split, restrict_to=mine, return_ranks=True,
                         progress=progress and rank == 0, **kwargs)
    shards = all_gather_objects({name: (m.ranks, m.query_index) for name, m in local.items()})
    names = list(dict.fromkeys(name for shard in shards for name in shard))
    num_split = len(kg.split(split))
    hits_at = kwargs.get("hits_at")
    result = {}
    for name in names:
        parts = [shard[name] for shard in shards if name in shard]
        ranks = {rank_type: torch.cat([p[0][rank_type] for p in parts]) for rank_type in parts[0][0]}
        query_index = torch.cat([p[1] for p in parts])
        extra = {"hits_at": hits_at} if hits_at is not None else {}
        result[name] = RankMetrics.from_ranks(ranks, query_index >= num_split, keep_ranks=return_ranks,
                                              query_index=query_index, **extra)
    return result


def _query_positions(restrict_to, num_queries: int) -> torch.Tensor:
    if restrict_to is None:
        return torch.arange(num_queries)
    restrict_to = torch.as_tensor(restrict_to).cpu()
    if restrict_to.dtype == torch.bool:
        return restrict_to.nonzero().squeeze(1)
    return restrict_to.long().reshape(-1)
