"""1-N binary cross-entropy on logits with fewer passes over the ``(B, N)`` score matrix.

For logits ``s`` and (smoothed) labels ``y`` in [0, 1] the mean BCE is (ConvE/TuckER 1-N training)

    L = mean( -y log sigmoid(s) - (1 - y) log(1 - sigmoid(s)) ) = mean( softplus(s) - y s )

since ``log(1 - sigmoid(s)) = log sigmoid(s) - s`` and ``softplus(s) = -log sigmoid(-s)``; and
``dL/ds = (sigmoid(s) - y) / numel``. ``F.binary_cross_entropy_with_logits`` evaluates the first form with
four full-size temporaries (log-sigmoid, ``1 - y``, two in-place updates) and then the mean; here the forward
is one ``softplus`` + sum and one BLAS dot product ``<s, y>``, and the backward writes one tensor. Same value
up to float rounding (``tests/test_perf_invariants.py``); ``softplus`` is torch's, stable for large ``|s|``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _BCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        ctx.save_for_backward(logits, targets)
        flat_logits, flat_targets = logits.reshape(-1), targets.reshape(-1)
        total = F.softplus(flat_logits).sum() - torch.dot(flat_logits, flat_targets)
        return total / max(logits.numel(), 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, targets = ctx.saved_tensors
        grad = torch.sigmoid(logits)
        grad.sub_(targets).mul_(grad_loss / max(logits.numel(), 1))
        return grad, None


def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` against ``targets`` (same shape, e.g. ``(B, N)``): a 0-d tensor
    equal to ``F.binary_cross_entropy_with_logits(logits, targets)``. Targets get no gradient."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    targets = targets.detach().to(logits.dtype)
    return _BCEWithLogits.apply(logits.contiguous(), targets.contiguous())
