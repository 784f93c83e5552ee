"""The interface every link-prediction model implements.

A model scores tail candidates for queries ``(head, relation)``; relation ids include inverse relations
(``r + num_relations``), so head prediction is tail prediction with the inverse relation. Training is 1-N:
each query is scored against all entities and compared with a (smoothed) multi-hot label row.
"""

from __future__ import annotations

import torch
from torch import nn


class LinkPredictor(nn.Module):
    """Base class: subclasses implement :meth:`score_tails`; the 1-N loss is written once, here."""

    num_entities: int

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Logits of every candidate tail.

        Args:
            heads: ``(batch,)`` long tensor of query entities.
            relations: ``(batch,)`` long tensor of relations, inverse relations included.

        Returns:
            ``(batch, num_entities)`` float tensor; higher means more plausible.
        """
        raise NotImplementedError

    def score_outputs(self, heads: torch.Tensor, relations: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named score matrices for evaluation (multimodal models return one per modality plus fused ones).

        The default is the single output ``{"model": score_tails(...)}``; every value is ``(batch, num_entities)``.
        """
        return {"model": self.score_tails(heads, relations)}

    def loss(self, heads: torch.Tensor, relations: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """1-N binary cross-entropy on logits against ``targets`` of shape ``(batch, num_entities)``."""
        logits = self.score_tails(heads, relations)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
        return loss, {"bce": loss.detach()}

    def prepare_evaluation(self) -> None:
        """Hook called once before an evaluation pass (e.g. to cache all entities' fused embeddings)."""

    def end_evaluation(self) -> None:
        """Hook called after an evaluation pass (drop caches)."""
