"""Filtered ranks of target entities in a batch of 1-N score rows.

The filtered protocol (Bordes et al. 2013, "Translating Embeddings for Modeling Multi-relational Data",
Sec. 4.2) ranks the target of a query ``(h, r, ?)`` among all entities after removing the *other* known
answers of that query (from train, valid and test). Ties are resolved three ways, as in PyKEEN
(Berrendorf et al. 2020, "Interpretable and Fair Comparison of Link Prediction or Entity Alignment
Methods", Sec. 3):

* optimistic  = 1 + #(score > target score)
* pessimistic = #(score >= target score), the target itself included
* realistic   = (optimistic + pessimistic) / 2, the expected rank under a random order of the ties.

NaN never earns a good rank: a NaN candidate counts as ``-inf`` (it never beats a finite target), and a
row whose target scores NaN gets the worst rank in every rank type, the number of its candidates.

Speed: the ``(batch, num_entities)`` matrix is read exactly twice (one ``>`` and one ``>=`` count, or once
when only one of them is needed) and never written. Filtering does not mask the matrix: the comparisons
are counted over all entities and the contribution of the filtered entries, read with one sparse gather, is
subtracted. The cost of filtering is therefore proportional to the number of known answers, not to
``batch * num_entities``.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np
import torch

RANK_TYPES = ("realistic", "optimistic", "pessimistic")

#: Intra-op threads for the ranking work on CPU. Every op after the score product is memory-bound and
#: small (a few MiB); with more threads OpenMP's fork/join costs more than it saves, by an order of
#: magnitude once the cores are shared (measured on the 2-core dev machine: filter lookup 0.06 s with one
#: thread against 0.88 s CPU time with two, for 10k FB15k-237 queries).
CPU_RANKING_THREADS = 1


@contextlib.contextmanager
def cpu_ranking_threads(device):
    """Limit torch's intra-op threads to :data:`CPU_RANKING_THREADS` while ranking on CPU, then restore."""
    previous = torch.get_num_threads()
    if torch.device(device).type != "cpu" or previous <= CPU_RANKING_THREADS:
        yield
        return
    torch.set_num_threads(CPU_RANKING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def filtered_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor | None = None,
    filter_cols: torch.Tensor | None = None,
    rank_types: Iterable[str] = RANK_TYPES,
    assume_unique: bool = False,
    workspace: "RankingWorkspace | None" = None,
) -> dict[str, torch.Tensor]:
    """Ranks of each row's target among that row's unfiltered candidates.

    Args:
        scores: ``(batch, num_entities)`` float tensor, higher is better (any floating dtype, any device).
        targets: ``(batch,)`` long tensor, the entity whose rank is wanted in each row.
        filter_rows, filter_cols: ``(nnz,)`` long tensors; entity ``filter_cols[k]`` is removed from the
            candidates of row ``filter_rows[k]`` (as returned by :meth:`FilterIndex.lookup`). The target of a
            row is never removed, so the filter may contain it. ``None`` gives the raw (unfiltered) rank.
        rank_types: any of ``"realistic"``, ``"optimistic"``, ``"pessimistic"``.
        assume_unique: set when the ``(row, col)`` pairs are known to be distinct (FilterIndex output is);
            otherwise duplicates are removed first, since each pair is subtracted once per occurrence.
        workspace: a :class:`RankingWorkspace` reused across the batches of an evaluation pass (created here
            when not given or too small).

    Returns:
        rank type -> ``(batch,)`` tensor on ``scores.device``: long for optimistic and pessimistic, float64
        for realistic (exact halves). All ranks are 1-based.
    """
    with cpu_ranking_threads(scores.device):
        return _filtered_ranks(scores, targets, filter_rows, filter_cols, rank_types, assume_unique, workspace)


def _filtered_ranks(scores, targets, filter_rows, filter_cols, rank_types, assume_unique, workspace):
    rank_types = tuple(rank_types)
    unknown = set(rank_types) - set(RANK_TYPES)
    if unknown:
        raise ValueError(f"unknown rank type(s) {sorted(unknown)}; expected some of {RANK_TYPES}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, num_entities), got shape {tuple(scores.shape)}")
    batch, num_entities = scores.shape
    device = scores.device
    targets = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if targets.numel() != batch:
        raise ValueError(f"{targets.numel()} targets for {batch} score rows")

    target_scores = scores.gather(1, targets.unsqueeze(1))  # (batch, 1)
    nan_target = torch.isnan(target_scores.squeeze(1))
    any_nan_target = bool(nan_target.any())
    # as -inf, a NaN target is >= every candidate (NaN ones included, below): pessimistic = all candidates
    target_scores = torch.where(torch.isnan(target_scores), float("-inf"), target_scores)

    need_greater = "optimistic" in rank_types or "realistic" in rank_types
    need_not_smaller = "pessimistic" in rank_types or "realistic" in rank_types or any_nan_target
    if workspace is None or not workspace.fits(batch, num_entities, device):
        workspace = RankingWorkspace(batch, num_entities, device)
    greater = workspace.count("gt", scores, target_scores) if need_greater else None
    not_smaller = workspace.count("ge", scores, target_scores) if need_not_smaller else None

    if not_smaller is not None:
        # NaN compares false with everything, but as -inf it ties with a -inf (or NaN) target
        worst_rows = (target_scores.squeeze(1) == float("-inf")).nonzero().squeeze(1)
        if worst_rows.numel():
            not_smaller.index_add_(0, worst_rows, torch.isnan(scores[worst_rows]).sum(1))

    if filter_rows is not None and filter_rows.numel():
        rows = torch.as_tensor(filter_rows, dtype=torch.long).to(device, non_blocking=True)
        cols = torch.as_tensor(filter_cols, dtype=torch.long).to(device, non_blocking=True)
        if not assume_unique:
            pairs = torch.unique(rows * num_entities + cols)
            rows, cols = pairs // num_entities, pairs % num_entities
        values = scores.reshape(-1).index_select(0, rows * num_entities + cols)
        values = torch.where(torch.isnan(values), float("-inf"), values)
        row_targets = target_scores.squeeze(1).index_select(0, rows)
        if greater is not None:  # the target's own entry is never greater than itself
            greater.index_add_(0, rows, (values > row_targets).long(), alpha=-1)
        if not_smaller is not None:  # ... but it is >= itself: it stays a candidate of its own query
            not_target = cols != targets.index_select(0, rows)
            not_smaller.index_add_(0, rows, ((values >= row_targets) & not_target).long(), alpha=-1)

    if any_nan_target and greater is not None:  # worst in every rank type: optimistic = pessimistic
        greater = torch.where(nan_target, not_smaller - 1, greater)

    ranks: dict[str, torch.Tensor] = {}
    for rank_type in rank_types:
        if rank_type == "optimistic":
            ranks[rank_type] = greater + 1
        elif rank_type == "pessimistic":
            ranks[rank_type] = not_smaller.clone()
        else:
            ranks[rank_type] = (greater + 1 + not_smaller).double() * 0.5
    return ranks


class RankingWorkspace:
    """Reusable comparison mask and fast per-row counting for :func:`filtered_ranks`.

    The mask is ``(max_batch, padded_width)`` bool with ``padded_width`` a multiple of ``8 * 127``; the
    padding columns stay False. Counting reads the mask as int64 words (8 mask bytes each) and adds at most
    127 words per byte lane before folding the lanes (SIMD-within-a-register). On CPU, where a bool
    reduction widens every element to int64, this took 0.8 ms against 42 ms for ``mask.sum(1)`` on a
    461 x 14,541 mask (one thread). The comparison itself runs through NumPy on CPU, 1.7x faster than
    PyTorch's (4.2 ms against 7.2 ms) with the same result (NaN compares false).

    Args:
        max_batch: most score rows per call.
        num_entities: columns of the score matrix.
        device: where the score matrices live.
        use_numpy: compare through NumPy on CPU when the dtype allows (the default); ``False`` forces the
            torch comparison everywhere (tests check both give the same counts).
    """

    _LANE_LIMIT = 127  # words summed per block: a byte lane stays <= 127, so no int64 sign overflow
    _WORD_BYTES = 8

    def __init__(self, max_batch: int, num_entities: int, device, use_numpy: bool = True):
        block = self._LANE_LIMIT * self._WORD_BYTES
        self.num_entities = int(num_entities)
        self.padded_width = -(-self.num_entities // block) * block
        self.device = torch.device(device)
        self.use_numpy = use_numpy
        self.mask = torch.zeros(max(1, int(max_batch)), self.padded_width, dtype=torch.bool, device=self.device)

    def fits(self, batch: int, num_entities: int, device) -> bool:
        return (
            batch <= self.mask.shape[0] and num_entities == self.num_entities
            and torch.device(device) == self.device
        )

    def count(self, comparison: str, scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` long: per row, how many ``scores`` are ``>`` (``"gt"``) or ``>=`` (``"ge"``) the row's
        threshold ``thresholds (batch, 1)``. One read of ``scores``."""
        batch = scores.shape[0]
        mask = self.mask[:batch, : self.num_entities]
        if self.use_numpy and scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
            compare = np.greater if comparison == "gt" else np.greater_equal
            compare(scores.detach().numpy(), thresholds.detach().numpy(), out=mask.numpy())
        else:
            compare = torch.gt if comparison == "gt" else torch.ge
            compare(scores, thresholds, out=mask)
        words = self.mask[:batch].view(torch.int64).view(batch, -1, self._LANE_LIMIT)
        lanes = words.sum(2)  # (batch, blocks): 8 byte lanes per word, each <= 127
        lanes = (lanes & 0x00FF00FF00FF00FF) + ((lanes >> 8) & 0x00FF00FF00FF00FF)
        lanes = (lanes & 0x0000FFFF0000FFFF) + ((lanes >> 16) & 0x0000FFFF0000FFFF)
        lanes = (lanes & 0xFFFFFFFF) + ((lanes >> 32) & 0xFFFFFFFF)
        return lanes.sum(1)
