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

Speed. The log-space form costs about 40 passes over the ``(M, B, N)`` scores forward and as many backward (20%
of an FB15k-237 IMF training step). :class:`_DecisionLogit` computes the same logit in probability space,
``P = sum_m w_m sigmoid(s_m)`` and ``1 - P = sum_m w_m sigmoid(-s_m)`` (never ``1 - P`` by subtraction, which
would lose the top candidates' precision), ``s = log P - log(1 - P)``, with the closed-form gradients

    ds/ds_m = w_m sigmoid(s_m) sigmoid(-s_m) / (P (1 - P)),
    ds/dlog w_m = w_m sigmoid(s_m) / P - w_m sigmoid(-s_m) / (1 - P).

Where ``P`` or ``1 - P`` is below ``2^-100`` (every score below about -69, or every score above +69: float32
sigmoids then lose precision or underflow) those entries are recomputed in log space, forward and backward, so
the result is the log-space one everywhere (``tests/test_perf_invariants.py`` compares both, extreme scores
included).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

MODES = ("learned", "uniform")
#: entries whose P or 1 - P falls below this are recomputed in log space (float32 sigmoids lose precision there)
EXACT_BELOW = 2.0 ** -100


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
        branch_scores = [scores[m].float().contiguous() for m in self.modalities]
        log_w = self.log_weights(relations).to(branch_scores[0].device).float()
        return _DecisionLogit.apply(log_w, *branch_scores)

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, mode={self.mode!r}, per_relation={self.per_relation}"


def log_space_logit(log_w: torch.Tensor, scores: list[torch.Tensor]) -> torch.Tensor:
    """``log P - log(1 - P)`` by log-sum-exp of ``log w_m + log sigmoid(+-s_m)``: the reference form.

    Shapes: log_w ``(M,)`` or ``(B, M)``; scores ``M`` tensors ``(B, N)`` (or ``(K,)`` with log_w ``(M,)`` or
    ``(K, M)``, one weight row per entry) -> same shape as each score tensor.
    """
    stacked = torch.stack(scores, dim=0)
    log_w = log_w.t().unsqueeze(-1) if log_w.dim() == 2 and stacked.dim() == 3 else (
        log_w.t() if log_w.dim() == 2 else log_w.view(-1, *([1] * (stacked.dim() - 1))))
    return (torch.logsumexp(log_w + F.logsigmoid(stacked), dim=0)
            - torch.logsumexp(log_w + F.logsigmoid(-stacked), dim=0))


def _weight_columns(log_w: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``w_m`` as 0-d tensors (global weights) or ``(B, 1)`` columns (per-relation weights)."""
    weights = log_w.exp()
    return [weights[m] if weights.dim() == 1 else weights[:, m:m + 1] for m in range(count)]


class _DecisionLogit(torch.autograd.Function):
    """The fused logit in probability space with closed-form gradients (module docstring).

    Shapes: log_w ``(M,)`` or ``(B, M)``, scores ``M`` x ``(B, N)`` float -> ``(B, N)``.
    """

    @staticmethod
    def forward(ctx, log_w, *scores):
        weights = _weight_columns(log_w, len(scores))
        prob = not_prob = None
        sig, sig_not = [], []
        for s, w in zip(scores, weights):
            a, b = torch.sigmoid(s), torch.sigmoid(torch.neg(s))
            prob = a * w if prob is None else prob.addcmul_(a, w)
            not_prob = b * w if not_prob is None else not_prob.addcmul_(b, w)
            sig.append(a)
            sig_not.append(b)
        logit = torch.log(prob).sub_(torch.log(not_prob))
        exact = None
        if bool(prob.min() < EXACT_BELOW) or bool(not_prob.min() < EXACT_BELOW):
            exact = ((prob < EXACT_BELOW) | (not_prob < EXACT_BELOW)).nonzero(as_tuple=True)
            rows = log_w if log_w.dim() == 1 else log_w[exact[0]]
            logit[exact] = log_space_logit(rows, [s[exact] for s in scores])
        ctx.exact = exact
        ctx.save_for_backward(log_w, prob, not_prob, *sig, *sig_not, *(scores if exact is not None else ()))
        return logit

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        log_w, prob, not_prob, *rest = ctx.saved_tensors
        exact = ctx.exact
        count = (len(rest) if exact is None else len(rest) * 2 // 3) // 2
        sig, sig_not, scores = rest[:count], rest[count:2 * count], rest[2 * count:]
        weights = _weight_columns(log_w, count)
        grad = grad.float()
        per_odds = grad / (prob * not_prob)  # ds/ds_m = w_m sig_m sig_not_m / (P (1 - P))
        grad_scores = [torch.mul(a, b).mul_(per_odds).mul_(w) if ctx.needs_input_grad[m + 1] else None
                       for m, (a, b, w) in enumerate(zip(sig, sig_not, weights))]
        grad_log_w = None
        if ctx.needs_input_grad[0]:  # ds/dlog w_m = w_m (sig_m / P - sig_not_m / (1 - P))
            over_p, over_not_p = grad / prob, grad / not_prob
            if exact is not None:  # those entries' exact part is added below
                over_p[exact] = 0.0
                over_not_p[exact] = 0.0
            columns = []
            for a, b, w in zip(sig, sig_not, weights):
                if log_w.dim() == 1:
                    columns.append(w * (torch.dot(a.reshape(-1), over_p.reshape(-1))
                                        - torch.dot(b.reshape(-1), over_not_p.reshape(-1))))
                else:
                    columns.append(w[:, 0] * (torch.einsum("bn,bn->b", a, over_p)
                                              - torch.einsum("bn,bn->b", b, over_not_p)))
            grad_log_w = torch.stack(columns, dim=-1)
        if exact is not None:  # entries where float32 probabilities are inexact: the log-space gradient
            for part in grad_scores:
                if part is not None:
                    part[exact] = 0.0
            live = grad[exact] != 0  # (a -inf score, e.g. a filtered candidate, has no log-space gradient)
            exact = tuple(e[live] for e in exact)
        if exact is not None and exact[0].numel() > 0:
            with torch.enable_grad():
                leaf_w = log_w.detach().requires_grad_()
                rows = leaf_w if log_w.dim() == 1 else leaf_w[exact[0]]
                leaf_scores = [s[exact].detach().requires_grad_() for s in scores]
                value = log_space_logit(rows, leaf_scores)
                parts = torch.autograd.grad(value, [leaf_w, *leaf_scores], grad[exact])
            for m, part in enumerate(parts[1:]):
                if grad_scores[m] is not None:
                    grad_scores[m][exact] = part
            if grad_log_w is not None:
                grad_log_w = grad_log_w + parts[0]
        return (grad_log_w, *grad_scores)
