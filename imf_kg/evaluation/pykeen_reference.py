"""Cross-check against PyKEEN's ``RankBasedEvaluator`` on exactly the same scores.

Both evaluators score a DistMult model (Yang et al. 2015, score ``<e_h, w_r, e_t>``) built from the same
embeddings. PyKEEN scores heads with ``r`` directly while we score the inverse tail query with ``r^-1``; for
DistMult the two are the same number (the trilinear product is symmetric in ``h`` and ``t``), so the inverse
relation simply reuses ``w_r``. To make the comparison exact rather than "close", the embeddings are
*quantised*: every coordinate is a multiple of 1/8 with magnitude at most 31/8, so every product and every
partial sum is a multiple of 2^-9 below 2^24 * 2^-9 and float32 (and TF32) arithmetic is exact in any
summation order. Both sides then see bit-identical scores, ties included, and any metric difference is a
ranking difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

QUANTISATION_STEP = 8  # coordinates are integers / 8
QUANTISATION_LEVELS = 31  # |integer| <= 31
_PYKEEN_METRICS = {
    "mrr": "inverse_harmonic_mean_rank",
    "mr": "arithmetic_mean_rank",
    "hits@1": "hits_at_1",
    "hits@3": "hits_at_3",
    "hits@10": "hits_at_10",
}


def quantised_random_embeddings(
    num_entities: int, num_relations: int, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random ``(num_entities, dim)`` and ``(num_relations, dim)`` float32 embeddings whose DistMult
    scores are exact in float32 (see the module docstring); requires ``dim * 31**3 < 2**24``."""
    if dim * QUANTISATION_LEVELS**3 >= 2**24:
        raise ValueError(f"dim={dim} too large for exact float32 DistMult scores (max {2**24 // 31**3})")
    generator = torch.Generator().manual_seed(seed)

    def draw(rows: int) -> torch.Tensor:
        values = torch.randn(rows, dim, generator=generator) * QUANTISATION_STEP
        return values.round().clamp(-QUANTISATION_LEVELS, QUANTISATION_LEVELS) / QUANTISATION_STEP

    return draw(num_entities), draw(num_relations)


def distmult_score_fn(entity_embeddings: torch.Tensor, relation_embeddings: torch.Tensor):
    """1-N DistMult scores ``(e_h * w_r) @ E^T`` -> ``(batch, num_entities)``; relation ids may include inverses
    (``r + num_relations`` reuses ``w_r``)."""
    num_relations = relation_embeddings.shape[0]

    def score(heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        device = entity_embeddings.device
        query = entity_embeddings[heads.to(device)] * relation_embeddings[relations.to(device) % num_relations]
        return query @ entity_embeddings.T

    return score


def pykeen_distmult(kg, entity_embeddings: torch.Tensor, relation_embeddings: torch.Tensor):
    """A PyKEEN ``DistMult`` over ``kg``'s ids whose representations are the given tensors (no constraint,
    no regularizer, so the scores are exactly ``<e_h, w_r, e_t>``)."""
    from pykeen.models import DistMult
    from pykeen.triples import CoreTriplesFactory

    factory = CoreTriplesFactory.create(
        mapped_triples=kg.train, num_entities=kg.num_entities, num_relations=kg.num_relations
    )
    model = DistMult(
        triples_factory=factory,
        embedding_dim=entity_embeddings.shape[1],
        entity_constrainer=None,
        regularizer=None,
        random_seed=0,
    )
    with torch.no_grad():
        model.entity_representations[0]._embeddings.weight.copy_(entity_embeddings)
        model.relation_representations[0]._embeddings.weight.copy_(relation_embeddings)
    return model


@dataclass
class PykeenResult:
    """What PyKEEN's evaluator reported.

    Attributes:
        values: ``values[rank_type][side][metric]`` with this toolkit's metric names (``mrr``, ``mr``, ``hits@k``).
        ranks: ``(side, rank_type)`` -> sorted float64 numpy array of PyKEEN's per-query ranks (its batches
            may reorder queries, so the comparison is between sorted rank lists).
        seconds: wall time of ``RankBasedEvaluator.evaluate`` alone.
    """

    values: dict
    ranks: dict
    seconds: float


def pykeen_filtered_metrics(
    kg, split: str, entity_embeddings: torch.Tensor, relation_embeddings: torch.Tensor,
    batch_size: int = 256, device: str | torch.device = "cpu", max_triples: int | None = None,
) -> PykeenResult:
    """PyKEEN's filtered, both-sided rank-based evaluation of DistMult on ``kg``'s ``split`` (the first
    ``max_triples`` triples of it, filtered against all of train + valid + test)."""
    from pykeen.evaluation import RankBasedEvaluator

    model = pykeen_distmult(kg, entity_embeddings, relation_embeddings).to(device)
    evaluated = kg.split(split)[:max_triples]
    all_known = [kg.split(s) for s in ("train", "valid", "test")]
    evaluator = RankBasedEvaluator(filtered=True, clear_on_finalize=False)
    start = time.perf_counter()
    result = evaluator.evaluate(
        model, mapped_triples=evaluated, additional_filter_triples=all_known,
        batch_size=batch_size, use_tqdm=False, device=torch.device(device),
    )
    seconds = time.perf_counter() - start
    values: dict = {}
    for rank_type in ("realistic", "optimistic", "pessimistic"):
        for side in ("both", "head", "tail"):
            for ours, theirs in _PYKEEN_METRICS.items():
                value = float(result.get_metric(f"{side}.{rank_type}.{theirs}"))
                values.setdefault(rank_type, {}).setdefault(side, {})[ours] = value
    ranks = {
        (str(side), str(rank_type)): np.sort(np.concatenate(parts).astype(np.float64))
        for (side, rank_type), parts in evaluator.ranks.items()
    }
    evaluator.clear()
    return PykeenResult(values=values, ranks=ranks, seconds=seconds)


def compare_with_pykeen(ours, reference: PykeenResult, tolerance: float = 1e-6) -> list[str]:
    """Differences between our :class:`RankMetrics` (computed with ``return_ranks=True``) and PyKEEN's.

    Metrics are compared to ``tolerance`` relative to ``max(1, |value|)``: PyKEEN averages ranks in float32,
    so a mean rank of a few thousand carries float32 rounding. The per-query ranks, which are exact
    integers or halves on both sides, must be identical. Returns one line per difference (empty if none).
    """
    problems = []
    for rank_type, sides in reference.values.items():
        for side, metrics in sides.items():
            for name, theirs in metrics.items():
                mine = ours.get(name, side, rank_type)
                if abs(mine - theirs) > tolerance * max(1.0, abs(theirs)):
                    problems.append(f"{rank_type} {side} {name}: ours {mine!r}, pykeen {theirs!r}")
    if ours.ranks is not None:
        for (side, rank_type), theirs in reference.ranks.items():
            selection = ours.is_head if side == "head" else ~ours.is_head
            mine = np.sort(ours.ranks[rank_type][selection].double().numpy())
            if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                differ = int((mine != theirs).sum()) if mine.shape == theirs.shape else "all"
                problems.append(f"{side} {rank_type} per-query ranks differ ({differ} of {len(theirs)})")
    return problems
