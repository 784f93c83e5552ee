"""Filtered rank-based evaluation: ranks, metrics and the evaluation pass over a split."""

from imf_kg.evaluation.evaluator import DEFAULT_SCORE_BYTES, batch_size_for_budget, evaluate_link_prediction
from imf_kg.evaluation.metrics import RankMetrics, metrics_table, rank_metrics
from imf_kg.evaluation.ranking import RANK_TYPES, filtered_ranks

__all__ = [
    "DEFAULT_SCORE_BYTES",
    "RANK_TYPES",
    "RankMetrics",
    "batch_size_for_budget",
    "evaluate_link_prediction",
    "filtered_ranks",
    "metrics_table",
    "rank_metrics",
]
