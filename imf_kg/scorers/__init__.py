"""Scorers: (query entity, relation) -> logits over all candidate entities."""

from imf_kg.scorers.contextual import ORDERS, ContextualRelationScorer, distinct_relations

__all__ = ["ORDERS", "ContextualRelationScorer", "distinct_relations"]
