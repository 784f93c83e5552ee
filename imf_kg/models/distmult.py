"""DistMult (Yang et al., ICLR 2015) as a 1-N link predictor: a cheap baseline and the engine's test model."""

from __future__ import annotations

import torch
from torch import nn

from imf_kg.models.base import LinkPredictor


class DistMult(LinkPredictor):
    """Score ``f(h, r, t) = <e_h, w_r, e_t>`` (Yang et al. 2015, Eq. 2: a diagonal bilinear form).

    Scoring every tail at once is one matrix product, ``(e_h * w_r) @ E^T``. Relation ids include the
    inverse relations (``r + num_relations``), each with its own vector, so head prediction is tail
    prediction with the inverse relation.

    Args:
        num_entities: N.
        num_relations: relation ids including inverses (``2 * |R|``).
        dim: embedding size d.
        dropout: dropout on the query vector ``e_h * w_r`` during training.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 64, dropout: float = 0.2):
        super().__init__()
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        self.entity = nn.Embedding(self.num_entities, dim)
        self.relation = nn.Embedding(self.num_relations, dim)
        self.query_dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @classmethod
    def from_kg(cls, kg, dim: int = 64, dropout: float = 0.2) -> "DistMult":
        """Sized from a :class:`~imf_kg.data.KnowledgeGraph` (entities, relations with inverses)."""
        return cls(kg.num_entities, kg.num_relations_with_inverse, dim=dim, dropout=dropout)

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.entity.weight)
        nn.init.xavier_normal_(self.relation.weight)

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Logits of all tails.

        Args:
            heads: ``(batch,)`` long tensor.
            relations: ``(batch,)`` long tensor, inverse relations included.

        Returns:
            ``(batch, num_entities)`` scores ``(e_h * w_r) @ E^T``.
        """
        query = self.query_dropout(self.entity(heads) * self.relation(relations))  # (batch, dim)
        return query @ self.entity.weight.t()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_entities={self.num_entities}, num_relations={self.num_relations}, "
                f"dim={self.entity.embedding_dim}, dropout={self.query_dropout.p})")
