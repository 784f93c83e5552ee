"""Compressed index of all known answers for each query (head, relation).

Used twice: over the training triples it gives the 1-N training labels, and over train+valid+test it gives
the filter of the "filtered" ranking protocol (Bordes et al. 2013). Relations include their inverses, so
the index maps (entity, relation or inverse relation) -> tails.
"""

from __future__ import annotations

import torch


class FilterIndex:
    """CSR map from a query key ``head * num_relations + relation`` to the sorted set of tails.

    Args:
        triples: ``(n, 3)`` long tensor of (head, relation, tail); relation ids in ``[0, num_relations)``.
        num_entities: number of entities.
        num_relations: number of relation ids, inverse relations included.
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int):
        triples = torch.as_tensor(triples, dtype=torch.long).reshape(-1, 3).cpu()
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        key = triples[:, 0] * self.num_relations + triples[:, 1]
        # sort by (key, tail) and drop duplicate triples
        combined = torch.unique(key * self.num_entities + triples[:, 2])
        key = torch.div(combined, self.num_entities, rounding_mode="floor")
        tails = combined - key * self.num_entities
        self.keys, counts = torch.unique_consecutive(key, return_counts=True)
        self.offsets = torch.zeros(len(self.keys) + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.offsets[1:])
        self.answers = tails

    def __len__(self) -> int:
        """Number of distinct queries."""
        return len(self.keys)

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def queries(self) -> torch.Tensor:
        """``(num_queries, 2)`` long tensor of the distinct (head, relation) queries, sorted by key."""
        heads = torch.div(self.keys, self.num_relations, rounding_mode="floor")
        return torch.stack([heads, self.keys - heads * self.num_relations], dim=1)

    def lookup_rows(self, query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers of queries given by their row in :meth:`queries`.

        Returns ``(batch_index, entity)`` long tensors: ``entity[k]`` is a known tail of query
        ``query_rows[batch_index[k]]``.
        """
        query_rows = torch.as_tensor(query_rows, dtype=torch.long).cpu()
        starts = self.offsets[query_rows]
        counts = self.offsets[query_rows + 1] - starts
        return self._expand(starts, counts)

    def lookup(self, heads: torch.Tensor, relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers of arbitrary queries (unknown queries have none).

        Returns ``(batch_index, entity)`` long tensors, as :meth:`lookup_rows`.
        """
        heads = torch.as_tensor(heads, dtype=torch.long).cpu()
        relations = torch.as_tensor(relations, dtype=torch.long).cpu()
        key = heads * self.num_relations + relations
        if len(self.keys) == 0:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        found = self.keys[pos] == key
        starts = self.offsets[pos]
        counts = torch.where(found, self.offsets[pos + 1] - starts, torch.zeros_like(starts))
        return self._expand(starts, counts)

    def _expand(self, starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = int(counts.sum())
        batch_index = torch.repeat_interleave(torch.arange(len(counts)), counts)
        first = torch.cumsum(counts, 0) - counts
        within = torch.arange(total) - torch.repeat_interleave(first, counts)
        entity = self.answers[torch.repeat_interleave(starts, counts) + within]
        return batch_index, entity

    def dense(self, heads: torch.Tensor, relations: torch.Tensor, device=None) -> torch.Tensor:
        """``(batch, num_entities)`` bool matrix of known answers (for small batches and tests)."""
        rows, cols = self.lookup(heads, relations)
        out = torch.zeros(len(heads), self.num_entities, dtype=torch.bool, device=device)
        out[rows.to(out.device), cols.to(out.device)] = True
        return out
