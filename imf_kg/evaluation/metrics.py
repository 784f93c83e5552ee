"""Rank-based metrics: MR, MRR and Hits@k per prediction side and rank type.

Definitions follow the filtered link-prediction protocol (Bordes et al. 2013) as computed by PyKEEN:
MR is the arithmetic mean rank, MRR the mean reciprocal rank, Hits@k the fraction of ranks ``<= k``
(for realistic ranks, which can be halves, the same ``<= k`` test). Side ``"tail"`` is the tail-prediction
direction ``(h, r, ?)``, ``"head"`` the head-prediction direction ``(?, r, t)`` (scored as the inverse tail
query ``(t, r^-1, ?)``) and ``"both"`` pools all queries of the two directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from imf_kg.evaluation.ranking import RANK_TYPES

SIDES = ("both", "head", "tail")
DEFAULT_HITS_AT = (1, 3, 10)


def metric_names(hits_at: Sequence[int] = DEFAULT_HITS_AT) -> tuple[str, ...]:
    return ("mrr", "mr") + tuple(f"hits@{k}" for k in hits_at)


def rank_metrics(ranks: torch.Tensor, hits_at: Sequence[int] = DEFAULT_HITS_AT) -> dict[str, float]:
    """MRR, MR and Hits@k of a ``(num_queries,)`` rank tensor (float64 arithmetic)."""
    ranks = ranks.detach().to("cpu", torch.float64)
    out = {"mrr": float(ranks.reciprocal().mean()), "mr": float(ranks.mean())}
    for k in hits_at:
        out[f"hits@{k}"] = float((ranks <= k).double().mean())
    return out


@dataclass
class RankMetrics:
    """Metrics of one score output over a set of queries.

    Attributes:
        values: ``values[rank_type][side][metric]``; sides without queries are absent.
        num_queries: side -> number of queries.
        ranks: optional per-query ranks, rank type -> ``(num_queries,)`` tensor, aligned with ``query_index``.
        query_index: optional ``(num_queries,)`` long tensor: position of each query in ``kg.queries(split)``.
        is_head: optional ``(num_queries,)`` bool tensor, True for head-prediction queries.
    """

    values: dict[str, dict[str, dict[str, float]]]
    num_queries: dict[str, int]
    ranks: dict[str, torch.Tensor] | None = None
    query_index: torch.Tensor | None = None
    is_head: torch.Tensor | None = None
    hits_at: tuple[int, ...] = field(default=DEFAULT_HITS_AT)

    @classmethod
    def from_ranks(
        cls,
        ranks: Mapping[str, torch.Tensor],
        is_head: torch.Tensor,
        hits_at: Sequence[int] = DEFAULT_HITS_AT,
        keep_ranks: bool = False,
        query_index: torch.Tensor | None = None,
    ) -> "RankMetrics":
        """Aggregate per-query ranks.

        Args:
            ranks: rank type -> ``(num_queries,)`` ranks (1-based).
            is_head: ``(num_queries,)`` bool, True where the query predicts a head.
            keep_ranks: keep the per-query ranks (CPU tensors) on the result.
        """
        is_head = torch.as_tensor(is_head, dtype=torch.bool).cpu()
        selections = {"both": None, "head": is_head, "tail": ~is_head}
        num_queries = {"both": int(is_head.numel()), "head": int(is_head.sum())}
        num_queries["tail"] = num_queries["both"] - num_queries["head"]
        values: dict[str, dict[str, dict[str, float]]] = {}
        cpu_ranks = {name: r.detach().cpu() for name, r in ranks.items()}
        for rank_type, r in cpu_ranks.items():
            if r.numel() != is_head.numel():
                raise ValueError(f"{rank_type} ranks have {r.numel()} entries for {is_head.numel()} queries")
            values[rank_type] = {
                side: rank_metrics(r if sel is None else r[sel], hits_at)
                for side, sel in selections.items()
                if num_queries[side]
            }
        return cls(
            values=values,
            num_queries=num_queries,
            ranks=cpu_ranks if keep_ranks else None,
            query_index=query_index.cpu() if (keep_ranks and query_index is not None) else None,
            is_head=is_head if keep_ranks else None,
            hits_at=tuple(hits_at),
        )

    # ------------------------------------------------------------------------------------------ access
    def get(self, metric: str = "mrr", side: str = "both", rank_type: str = "realistic") -> float:
        """One number, e.g. ``get("hits@10", side="head", rank_type="pessimistic")``."""
        try:
            return self.values[rank_type][side][metric]
        except KeyError:
            raise KeyError(
                f"no {metric!r} for side {side!r} and rank type {rank_type!r}; have rank types "
                f"{sorted(self.values)}, sides with queries "
                f"{[s for s in SIDES if self.num_queries.get(s)]}, metrics {list(metric_names(self.hits_at))}"
            ) from None

    @property
    def mrr(self) -> float:
        """Headline: realistic MRR over both directions."""
        return self.get("mrr")

    @property
    def mr(self) -> float:
        return self.get("mr")

    def hits_at_k(self, k: int) -> float:
        return self.get(f"hits@{k}")

    def headline(self) -> dict[str, float]:
        """Realistic metrics over both directions (the numbers papers report)."""
        return dict(self.values["realistic"]["both"])

    def to_dict(self) -> dict:
        """JSON-ready: ``{"num_queries": {...}, "realistic": {"both": {"mrr": ...}, ...}, ...}``."""
        out: dict = {"num_queries": dict(self.num_queries)}
        for rank_type in RANK_TYPES:
            if rank_type in self.values:
                out[rank_type] = {side: dict(m) for side, m in self.values[rank_type].items()}
        return out

    def to_markdown(self, rank_type: str = "realistic", digits: int = 4) -> str:
        """Markdown table: one row per side, one column per metric."""
        names = metric_names(self.hits_at)
        lines = [
            "| side | queries | " + " | ".join(_label(n) for n in names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for side in SIDES:
            if side in self.values.get(rank_type, {}):
                row = self.values[rank_type][side]
                cells = " | ".join(_fmt(n, row[n], digits) for n in names)
                lines.append(f"| {side} | {self.num_queries[side]} | {cells} |")
        return "\n".join(lines)


def metrics_table(
    results: Mapping[str, RankMetrics], side: str = "both", rank_type: str = "realistic", digits: int = 4
) -> str:
    """Markdown table with one row per score output (e.g. each modality and the fused score)."""
    if not results:
        return ""
    hits_at = next(iter(results.values())).hits_at
    names = metric_names(hits_at)
    lines = ["| output | " + " | ".join(_label(n) for n in names) + " |", "|---|" + "---:|" * len(names)]
    for output, metrics in results.items():
        cells = " | ".join(_fmt(n, metrics.get(n, side, rank_type), digits) for n in names)
        lines.append(f"| {output} | {cells} |")
    return "\n".join(lines)


def _label(name: str) -> str:
    return {"mrr": "MRR", "mr": "MR"}.get(name, name.replace("hits@", "Hits@"))


def _fmt(name: str, value: float, digits: int) -> str:
    return f"{value:.1f}" if name == "mr" else f"{value:.{digits}f}"
