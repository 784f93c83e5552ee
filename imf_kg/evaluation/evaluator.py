"""Filtered link-prediction evaluation of a model (or any 1-N score function) on a split, both directions.

Every query of ``kg.queries(split)`` is a tail query ``(entity, relation incl. inverse, target)``: the first
half predicts tails, the second half heads (as inverse tail queries). Queries are scored in batches; every
score output (one per modality and the fused one for multimodal models) is ranked in the same pass against
the filter ``kg.filter_index`` (train + valid + test), see :func:`filtered_ranks`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Sequence

import torch

from imf_kg.evaluation.filtering import DeviceFilter
from imf_kg.evaluation.metrics import DEFAULT_HITS_AT, RankMetrics
from imf_kg.evaluation.ranking import RANK_TYPES, RankingWorkspace, cpu_ranking_threads, filtered_ranks

ScoreFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | Mapping[str, torch.Tensor]"]

#: Default memory budget for the score matrices of one batch. On CPU, 32 MiB (461 FB15k-237 queries) keeps
#: a batch in a server's last-level cache while it is compared twice, yet amortises the per-batch Python
#: overhead (on the shared 2-core dev machine 8-16 MiB were slower and 64-256 MiB no faster); on a GPU
#: larger batches keep the device busy.
DEFAULT_SCORE_BYTES = {"cpu": 32 * 2**20, "cuda": 1 * 2**30}
_COMPARISON_MASK_BYTES = 1  # one bool per score (RankingWorkspace), reused across batches
#: Peak bytes per known answer of a batch while its filter is looked up and subtracted: the (row, entity)
#: int64 pairs, the lookup's int64 temporaries and filtered_ranks' gathered scores, flat indices and
#: comparison counts (34 bytes measured with benchmarks/scale_eval.py's tensor tracker; tests/test_scale.py).
FILTER_BYTES_PER_ANSWER = 40


def batch_size_for_budget(
    max_score_bytes: int, num_entities: int, num_outputs: int = 1, element_size: int = 4
) -> int:
    """Largest batch whose ``num_outputs`` score matrices ``(batch, num_entities)`` and comparison mask fit
    in ``max_score_bytes`` (at least 1)."""
    per_query = num_entities * (num_outputs * element_size + _COMPARISON_MASK_BYTES)
    return max(1, int(max_score_bytes) // per_query)


def evaluate_link_prediction(
    model_or_score_fn,
    kg,
    split: str = "valid",
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    ranks: Sequence[str] = RANK_TYPES,
    progress: bool = True,
    max_score_bytes: int | None = None,
    restrict_to: torch.Tensor | None = None,
    return_ranks: bool = False,
    hits_at: Sequence[int] = DEFAULT_HITS_AT,
) -> dict[str, RankMetrics]:
    """Filtered MR, MRR and Hits@k of every score output, for head, tail and both directions.

    Args:
        model_or_score_fn: a :class:`~imf_kg.models.base.LinkPredictor` (its ``score_outputs`` is used, and
            ``eval()``, ``prepare_evaluation()``/``end_evaluation()`` and ``torch.inference_mode()`` wrap the
            pass) or a callable ``(heads (B,), relations (B,)) -> (B, N)`` tensor or dict name -> ``(B, N)``.
        kg: the :class:`~imf_kg.data.kg.KnowledgeGraph`.
        split: ``"valid"`` or ``"test"``.
        batch_size: queries per batch. With ``max_score_bytes`` the smaller of the two is used.
        device: where the queries are sent (default: the model's device, else CPU).
        ranks: rank types to compute, see :func:`filtered_ranks`.
        progress: show a progress bar (tqdm, on stderr).
        max_score_bytes: memory budget for one batch's score matrices and comparison mask; the batch size is
            derived from it and the number of outputs, so peak memory does not grow with the entity count.
            The same number of bytes bounds the batch's filter work (known answers times
            :data:`FILTER_BYTES_PER_ANSWER`), so hub queries with many known answers are scored in smaller
            batches; a single query is never split. Peak evaluation memory is therefore at most about twice
            this budget (plus one query's row when the budget is below one row).
            Default when neither this nor ``batch_size`` is given: :data:`DEFAULT_SCORE_BYTES`.
        restrict_to: evaluate only these queries: ``(m,)`` long positions in ``kg.queries(split)`` (tail queries
            are ``0..n-1``, head queries ``n..2n-1``) or a ``(2n,)`` bool mask.
        return_ranks: keep per-query ranks, positions and directions on each result (``RankMetrics.ranks``).
        hits_at: the ``k`` of Hits@k.

    Returns:
        output name -> :class:`RankMetrics` (a plain tensor output is named ``"model"``). The headline number
        is ``result[name].mrr`` (realistic, both directions).
    """
    queries = kg.queries(split)
    num_split = len(kg.split(split))
    positions = _query_positions(restrict_to, len(queries))
    if len(positions) == 0:
        raise ValueError(f"no queries to evaluate: split {split!r} has {num_split} triples, restrict_to selects none")
    score_fn, model = _resolve_score_fn(model_or_score_fn)
    device = torch.device(device) if device is not None else _default_device(model)
    known_answers = DeviceFilter(kg.filter_index, device)
    num_entities = kg.num_entities

    if batch_size is None and max_score_bytes is None:
        max_score_bytes = DEFAULT_SCORE_BYTES.get(device.type, DEFAULT_SCORE_BYTES["cuda"])
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    # known answers per query, for the filter part of the budget (one vectorised lookup of the counts)
    answers_before = None
    if max_score_bytes is not None:
        counts = known_answers.answer_counts(queries[positions, 0], queries[positions, 1]).cpu()
        answers_before = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    collected: dict[str, dict[str, list[torch.Tensor]]] = {}
    with _evaluation_mode(model), _progress_bar(len(positions), progress) as bar:
        start = 0
        # with a memory budget the first batch is a single query: it reveals the number and dtype of outputs
        current = 1 if max_score_bytes is not None else batch_size
        workspace = None
        while start < len(positions):
            batch_positions = positions[start : start + current]
            heads, relations, targets = queries[batch_positions].unbind(1)
            outputs = score_fn(heads.to(device), relations.to(device))
            if isinstance(outputs, torch.Tensor):
                outputs = {"model": outputs}
            with cpu_ranking_threads(device):
                filter_rows, filter_cols = known_answers.lookup(heads, relations)
            for name, scores in outputs.items():
                _check_scores(name, scores, len(batch_positions), num_entities)
                if workspace is None or not workspace.fits(len(batch_positions), num_entities, scores.device):
                    workspace = None  # release the smaller mask before allocating its replacement
                    workspace = RankingWorkspace(len(batch_positions), num_entities, scores.device)
                batch_ranks = filtered_ranks(
                    scores, targets, filter_rows, filter_cols, ranks, assume_unique=True, workspace=workspace
                )
                per_output = collected.setdefault(name, {r: [] for r in ranks})
                for rank_type, value in batch_ranks.items():
                    per_output[rank_type].append(value)
            bar.update(len(batch_positions))
            start += len(batch_positions)
            current = _next_batch_size(batch_size, max_score_bytes, num_entities, outputs)
            if answers_before is not None:
                current = _within_filter_budget(answers_before, start, current, max_score_bytes)
            # drop this batch's score matrices and filter before the next batch allocates its own: the budget
            # holds one batch at a time
            outputs = scores = filter_rows = filter_cols = batch_ranks = None

    is_head = positions >= num_split
    return {
        name: RankMetrics.from_ranks(
            {r: torch.cat(parts) for r, parts in per_output.items()},
            is_head,
            hits_at=hits_at,
            keep_ranks=return_ranks,
            query_index=positions,
        )
        for name, per_output in collected.items()
    }


def _next_batch_size(batch_size, max_score_bytes, num_entities, outputs: Mapping[str, torch.Tensor]) -> int:
    if max_score_bytes is None:
        return batch_size
    element_size = max(s.element_size() for s in outputs.values())
    derived = batch_size_for_budget(max_score_bytes, num_entities, len(outputs), element_size)
    return derived if batch_size is None else min(batch_size, derived)


def _within_filter_budget(answers_before: torch.Tensor, start: int, current: int, max_score_bytes: int) -> int:
    """The largest batch size ``<= current`` (at least 1) whose queries from ``start`` have at most
    ``max_score_bytes // FILTER_BYTES_PER_ANSWER`` known answers in all. ``answers_before[i]``: the answers of
    the queries before position ``i`` (cumulative, ``(m + 1,)``)."""
    limit = int(answers_before[start]) + max(1, int(max_score_bytes) // FILTER_BYTES_PER_ANSWER)
    window = answers_before[start + 1 : start + current + 1]
    fitting = int(torch.searchsorted(window, torch.tensor([limit]), right=True))
    return max(1, fitting)


def _query_positions(restrict_to, num_queries: int) -> torch.Tensor:
    if restrict_to is None:
        return torch.arange(num_queries)
    restrict_to = torch.as_tensor(restrict_to).cpu()
    if restrict_to.dtype == torch.bool:
        if restrict_to.shape != (num_queries,):
            raise ValueError(f"restrict_to mask has shape {tuple(restrict_to.shape)}, expected ({num_queries},)")
        return restrict_to.nonzero().squeeze(1)
    positions = restrict_to.long().reshape(-1)
    if positions.numel() and (positions.min() < 0 or positions.max() >= num_queries):
        raise ValueError(f"restrict_to positions must lie in [0, {num_queries})")
    return positions


def _resolve_score_fn(model_or_score_fn) -> tuple[ScoreFn, torch.nn.Module | None]:
    if isinstance(model_or_score_fn, torch.nn.Module) and hasattr(model_or_score_fn, "score_outputs"):
        return model_or_score_fn.score_outputs, model_or_score_fn
    if not callable(model_or_score_fn):
        raise TypeError(f"expected a LinkPredictor or a score function, got {type(model_or_score_fn).__name__}")
    return model_or_score_fn, None


def _default_device(model) -> torch.device:
    if model is not None:
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _evaluation_mode(model):
    """``eval()`` + evaluation hooks + inference mode for a LinkPredictor; the training flag is restored."""
    if model is None:
        with torch.inference_mode():
            yield
        return
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model.prepare_evaluation()
            try:
                yield
            finally:
                model.end_evaluation()
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="query", desc="evaluating", disable=not enabled, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def _check_scores(name: str, scores: torch.Tensor, batch: int, num_entities: int) -> None:
    if not isinstance(scores, torch.Tensor) or scores.shape != (batch, num_entities):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"score output {name!r} has shape {shape}, expected ({batch}, {num_entities})")
    if not scores.is_floating_point():
        raise ValueError(f"score output {name!r} has dtype {scores.dtype}, expected a floating dtype")

