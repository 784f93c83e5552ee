"""Second-stage decision fusion of IMF (Sec. 3.5, Algorithm 1 lines 12-14).

Each modality (and the first-stage fused embedding) has its own scorer giving logits ``s_m`` ``(B, N)``. The
decision fusion is a weighted average of their *predictions*, i.e. of probabilities:

    P = sum_m w_m sigmoid(s_m),     w = softmax(theta)  (global)  or  softmax(theta + theta_r) (per relation)

Fusion is on probabilities, as the paper ("weighted average of all modality predictions") and the published
code (average of the sigmoid outputs, IMF_SPEC 6.3) do. The module returns the *logit* of that probability,

    s = log P - log(1 - P),

computed stably in log space (``log P = logsumexp_m(log w_m + logsigmoid(s_m))``, and the same with
``-s_m`` for ``log(1 - P)``). So ``sigmoid(s) == P`` exactly: ranking by ``s`` is ranking by ``P``, and
``binary_cross_entropy_with_logits(s, y)`` is the BCE of the fused prediction (the joint loss).

Modes: "learned" (weights trained jointly through the joint loss; initialised uniform) and "uniform" (fixed
``w_m = 1/M``, no parameters: the published code's evaluation-time average).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("learned", "uniform")


class DecisionFusion(nn.Module):
    """Weighted average of per-modality probabilities, returned as a logit (see the module docstring).

    Args:
        modalities: names of the score matrices to fuse, in a fixed order (e.g. structure, text, tucker).
        num_relations: number of relation ids, inverses included; needed when ``per_relation``.
        mode: "learned" or "uniform".
        per_relation: add a learned per-relation offset to the weight logits (needs ``num_relations``).

    Shapes:
        forward: mapping name -> ``(B, N)`` logits, relations ``(B,)`` -> ``(B, N)`` fused logits.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        num_relations: int | None = None,
        mode: str = "learned",
        per_relation: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.modalities = list(modalities)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct and non-empty, got {self.modalities}")
        if per_relation and mode != "learned":
            raise ValueError("per_relation weights need mode='learned'")
        if per_relation and not num_relations:
            raise ValueError("per_relation weights need num_relations")
        self.mode = mode
        self.per_relation = bool(per_relation)
        count = len(self.modalities)
        # Zero logits = uniform weights at the start, so the learned fusion starts from the reference's average.
        self.weight_logits = nn.Parameter(torch.zeros(count)) if mode == "learned" else None
        self.relation_weight_logits = nn.Embedding(num_relations, count) if per_relation else None
        if self.relation_weight_logits is not None:
            nn.init.zeros_(self.relation_weight_logits.weight)

    def log_weights(self, relations: torch.Tensor | None = None) -> torch.Tensor:
        """``log w``: ``(M,)``, or ``(B, M)`` when weights are per relation and ``relations`` ``(B,)`` is given."""
        if self.mode == "uniform":
            count = len(self.modalities)
            device = relations.device if relations is not None else None
            return torch.full((count,), -math.log(count), device=device)
        logits = self.weight_logits
        if self.relation_weight_logits is not None:
            if relations is None:
                raise ValueError("per-relation decision weights need the query relations")
            logits = logits + self.relation_weight_logits(relations)
        return F.log_softmax(logits, dim=-1)

    def weights(self, relations: torch.Tensor | None = None) -> torch.Tensor:
        """Modality weights ``w`` (each row sums to 1): ``(M,)`` or ``(B, M)``."""
        return self.log_weights(relations).exp()

    def forward(self, scores: Mapping[str, torch.Tensor], relations: torch.Tensor | None = None) -> torch.Tensor:
        """Fused logit ``log P - log(1 - P)`` with ``P = sum_m w_m sigmoid(scores[m])``, ``(B, N)``."""
        missing = [m for m in self.modalities if m not in scores]
        if missing:
            raise KeyError(f"decision fusion needs scores for {missing}; got {sorted(scores)}")
        stacked = torch.stack([scores[m].float() for m in self.modalities], dim=0)  # (M, B, N)
        log_w = self.log_weights(relations).to(stacked.device)
        log_w = log_w.t().unsqueeze(-1) if log_w.dim() == 2 else log_w.view(-1, 1, 1)  # (M, B or 1, 1)
        log_p = torch.logsumexp(log_w + F.logsigmoid(stacked), dim=0)
        log_not_p = torch.logsumexp(log_w + F.logsigmoid(-stacked), dim=0)
        return log_p - log_not_p

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, mode={self.mode!r}, per_relation={self.per_relation}"
