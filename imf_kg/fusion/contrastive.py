"""Contrastive regulariser of IMF's multimodal fusion (IMF Sec. 3.3, Eq. 2: d(f(x), f(x+)) << d(f(x), f(x-))).

Two functions:

* :func:`info_nce`: what the paper describes. The views of one entity in two modalities are a positive
  pair; the views of the *other* entities of the batch in the other modality are its negatives. Rows are
  L2-normalised (cosine similarity), divided by a temperature, and scored with a cross-entropy over the
  batch (InfoNCE / CLIP loss), in both directions and for every pair of modalities, then averaged.
* :func:`reference_contrastive_loss`: the function the published code defines but never calls
  (IMF_SPEC Sec. 5), with its syntax error fixed and nothing else changed: whole-matrix (Frobenius)
  normalisation, same-modality negatives, no temperature, ``softplus(neg - pos)``. Kept only so that the
  "reference" variant can switch it on; it is not what the paper describes.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
import torch.nn.functional as F


def info_nce(
    views: Sequence[torch.Tensor],
    temperature: float = 0.1,
    masks: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Symmetric cross-modal InfoNCE, averaged over modality pairs.

    For modalities ``a != b`` with L2-normalised rows ``z^a_i``, ``z^b_j`` and ``s_ij = <z^a_i, z^b_j> / tau``:

        L_ab = 1/2 mean_i [ -log softmax_j(s_ij)_i  - log softmax_j(s_ji)_i ]

    and the loss is the mean of ``L_ab`` over unordered pairs. Negatives are cross-modal and cross-entity.

    Args:
        views: ``M >= 2`` tensors ``(batch, d)``; row ``i`` of every view is the same entity. Give each entity
            once (duplicates would be counted as negatives of themselves).
        temperature: ``tau``.
        masks: optional ``(batch,)`` bool per view, True where the entity really has that modality. An entity
            missing either modality of a pair is neither an anchor nor a negative for that pair (its view is
            the shared "missing" vector, which says nothing about the entity).

    Returns:
        Scalar loss. Pairs with fewer than two usable entities (no negatives) are skipped; if none is usable,
        returns a zero that is still connected to the graph.
    """
    if len(views) < 2:
        raise ValueError(f"info_nce needs at least two views, got {len(views)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    batch = views[0].shape[0]
    normalised = [F.normalize(v.float(), dim=-1) for v in views]
    losses = []
    for a, b in combinations(range(len(views)), 2):
        za, zb = normalised[a], normalised[b]
        keep = None
        if masks is not None:
            for mask in (masks[a], masks[b]):
                if mask is not None:
                    keep = mask if keep is None else keep & mask
        if keep is not None:
            za, zb = za[keep], zb[keep]
        n = za.shape[0]
        if n < 2:
            continue
        logits = za @ zb.t() / temperature
        targets = torch.arange(n, device=logits.device)
        losses.append(0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)))
    if not losses:
        return sum(v.sum() for v in views) * 0.0 if batch else views[0].new_zeros(())
    return torch.stack(losses).mean()


def reference_contrastive_loss(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """The published code's intended (never called) contrastive loss, IMF_SPEC Sec. 5. Not the paper's loss.

    With ``V_m`` divided by its Frobenius norm (the whole matrix, not per row, as in the code):

        pos_i = mean over modality pairs (a, b) of <V_a[i], V_b[i]>
        neg_i = mean over the M * batch entries of row i of [V_1 V_1^T | ... | V_M V_M^T], diagonals set to 0
                (same-modality, different-entity similarities; the zeroed diagonals still count in the mean)
        loss  = mean_i softplus(neg_i - pos_i)

    Args:
        views: ``M >= 2`` tensors ``(batch, d)`` (the code has ``M = 3``: structure, visual, text).

    Returns:
        Scalar loss.
    """
    if len(views) < 2:
        raise ValueError(f"reference_contrastive_loss needs at least two views, got {len(views)}")
    normalised = [v.float() / torch.linalg.norm(v.float()) for v in views]
    positives = [(normalised[a] * normalised[b]).sum(dim=1) for a, b in combinations(range(len(views)), 2)]
    positive = torch.stack(positives, dim=1).mean(dim=1)
    negatives = []
    for v in normalised:
        gram = v @ v.t()
        negatives.append(gram - torch.diag_embed(torch.diagonal(gram)))
    negative = torch.cat(negatives, dim=1).mean(dim=1)
    return F.softplus(negative - positive).mean()
