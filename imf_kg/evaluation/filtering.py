"""Known answers of a batch of queries, looked up where the scores live.

:class:`~imf_kg.data.filter_index.FilterIndex` answers on CPU. On a GPU the per-batch CPU lookup and the
host-to-device copy of its output would cost more than the whole score product, so evaluation copies the
index's three CSR arrays (a few MiB) to the device once and looks up there. Same semantics as
``FilterIndex.lookup``; a test checks that both agree.
"""

from __future__ import annotations

import torch

from imf_kg.data.filter_index import FilterIndex


class DeviceFilter:
    """A :class:`FilterIndex` whose arrays live on ``device``.

    Args:
        index: the filter (for filtered ranking: ``kg.filter_index``, train + valid + test).
        device: where lookups happen and their results live.
    """

    def __init__(self, index: FilterIndex, device: torch.device | str):
        self.device = torch.device(device)
        self.num_relations = index.num_relations
        self.keys = index.keys.to(self.device)
        self.offsets = index.offsets.to(self.device)
        self.answers = index.answers.to(self.device)

    def answer_counts(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` long on :attr:`device`: how many known tails each query ``(heads[i], relations[i])``
        has (0 for an unknown query), without expanding them; sizes the filter work of a batch."""
        heads = heads.to(self.device, torch.long)
        relations = relations.to(self.device, torch.long)
        if len(self.keys) == 0:
            return torch.zeros(len(heads), dtype=torch.long, device=self.device)
        key = heads * self.num_relations + relations
        position = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        found = self.keys[position] == key
        return torch.where(found, self.offsets[position + 1] - self.offsets[position], 0)

    def lookup(self, heads: torch.Tensor, relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tails of the queries ``(heads[i], relations[i])``.

        Args:
            heads, relations: ``(batch,)`` long tensors (relations include inverses).

        Returns:
            ``(batch_index, entity)``: ``(nnz,)`` long tensors on :attr:`device`, grouped by query in batch
            order; ``entity[k]`` is a known tail of query ``batch_index[k]``.
        """
        heads = heads.to(self.device, torch.long)
        relations = relations.to(self.device, torch.long)
        if len(self.keys) == 0:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            return empty, empty
        key = heads * self.num_relations + relations
        position = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        found = self.keys[position] == key
        starts = self.offsets[position]
        counts = torch.where(found, self.offsets[position + 1] - starts, 0)
        batch_index = torch.repeat_interleave(counts)  # one host sync: the output length
        # entity k of query i sits at answers[starts[i] + (k - first output slot of query i)]
        first_slot = torch.cumsum(counts, 0) - counts
        slots = torch.arange(len(batch_index), device=self.device)
        entity = self.answers[slots + (starts - first_slot).index_select(0, batch_index)]
        return batch_index, entity
