"""Scorers: (query entity, relation) -> logits over all candidate entities."""

from imf_kg.scorers.bce import bce_with_logits
from imf_kg.scorers.contextual import ORDERS, ContextualRelationScorer, distinct_relations
from imf_kg.scorers.dropout import dropout
from imf_kg.scorers.softmax_ce import label_distribution, softmax_cross_entropy

__all__ = ["ORDERS", "ContextualRelationScorer", "bce_with_logits", "distinct_relations", "dropout",
           "label_distribution", "softmax_cross_entropy"]
