"""Data-parallel node classification under ``torchrun --nproc_per_node N -m node_tasks train --config ...``.

The shared :class:`imf_kg.training.Trainer` wraps the task's step in ``DistributedDataParallel``, scales
each rank's loss by ``weight * world_size`` and lets DDP average the gradients (see
:mod:`imf_kg.training.distributed`). What a rank trains on:

- **Mini-batch** (``mini_batch.batch_size: B``): the training nodes are shuffled with the trainer's data
  generator, which is seeded identically on every rank, and cut into global batches of ``B`` seeds, exactly
  as one process would. Rank ``k`` takes a contiguous slice of each global batch (``n_k`` seeds, weight
  ``n_k / B``) and samples the neighbourhood of its own seeds only, so sampling and message passing are
  split across ranks. The per-seed cross-entropy is a mean, so the weighted sum over ranks is the global
  batch's loss; neighbourhoods are sampled per rank, so results agree with one process in distribution,
  not number for number.
- **Full-batch** (the published protocol): message passing needs the whole graph, so there is nothing to
  split; every rank runs the full step with weight ``1 / N`` and the averaged gradient is exactly the
  single-process one (with dropout off: each rank draws its own dropout masks). Use mini-batches to scale.

A rank whose slice of a global batch is empty (more ranks than seeds) trains on the batch's first seed with
weight 0, so that every rank runs a forward and backward (DDP needs each rank's gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from imf_kg.training.distributed import _slice_bounds


@dataclass
class RankBatch:
    """One rank's part of a global training batch.

    Attributes:
        batch: what the task's step consumes (None: the full graph; else this rank's sampled subgraph).
        weight: ``n_k / B``, this rank's share of the global batch (``1 / world_size`` for full-batch).
        global_size: ``B``, the seeds in the global batch (for throughput logs).
    """

    batch: Any
    weight: float
    global_size: int


def full_graph_batches(num_train: int, world_size: int) -> list[RankBatch]:
    """The one full-graph step of an epoch, with this rank's weight ``1 / world_size``."""
    return [RankBatch(None, 1.0 / world_size, num_train)]


def rank_seed_batches(train_nodes: torch.Tensor, batch_size: int, generator: torch.Generator, rank: int,
                      world_size: int, sample: Callable[[torch.Tensor], Any]) -> Iterator[RankBatch]:
    """Global batches of ``batch_size`` shuffled ``train_nodes`` (``(n,)`` node ids); yields rank ``rank``'s
    slice of each, its neighbourhood sampled by ``sample(seeds) -> batch``.

    ``generator`` must be in the same state on every rank (the trainer seeds it identically), so that all
    ranks cut the same global batches.
    """
    order = train_nodes[torch.randperm(train_nodes.numel(), generator=generator)]
    for begin in range(0, order.numel(), batch_size):
        global_batch = order[begin:begin + batch_size]
        start, stop = _slice_bounds(global_batch.numel(), rank, world_size)
        if stop > start:
            yield RankBatch(sample(global_batch[start:stop]), (stop - start) / global_batch.numel(),
                            global_batch.numel())
        else:
            yield RankBatch(sample(global_batch[:1]), 0.0, global_batch.numel())
