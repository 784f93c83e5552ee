"""Neighbour-sampled mini-batches of a HeteroData for node classification (``node-tasks`` with
``mini_batch.batch_size``): torch_geometric's ``NeighborLoader`` where its compiled sampler is installed, else a
plain-PyTorch sampler with the same semantics behind the same ``NodeLoader``."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch_geometric.typing
from torch_geometric.loader import NeighborLoader, NodeLoader
from torch_geometric.sampler import BaseSampler, HeteroSamplerOutput, NodeSamplerInput


class TorchNeighborSampler(BaseSampler):
    """Uniform in-neighbour sampling for a HeteroData in plain PyTorch (NeighborLoader's semantics).

    torch_geometric's own ``NeighborSampler`` needs the compiled ``pyg-lib`` or ``torch-sparse``; where
    neither is installed, :func:`make_neighbor_loader` plugs this sampler into the same ``NodeLoader``.
    Hop k samples, for every frontier node of every edge type ending at its type, up to
    ``num_neighbors[k]`` distinct in-edges (-1: all) without replacement.
    """

    def __init__(self, data, num_neighbors: Sequence[int]):
        self.num_neighbors = list(num_neighbors)
        self.num_nodes = {nt: int(data[nt].num_nodes) for nt in data.node_types}
        self.csc = {}
        for et in data.edge_types:
            edge_index = data[et].edge_index
            order = torch.argsort(edge_index[1], stable=True)
            counts = torch.bincount(edge_index[1], minlength=self.num_nodes[et[2]])
            colptr = torch.zeros(self.num_nodes[et[2]] + 1, dtype=torch.long)
            colptr[1:] = torch.cumsum(counts, 0)
            self.csc[et] = (colptr, order, edge_index[0][order])

    def sample_from_nodes(self, inputs: NodeSamplerInput) -> HeteroSamplerOutput:
        seed_type = inputs.input_type
        nodes = {nt: [] for nt in self.num_nodes}
        local = {nt: torch.full((n,), -1, dtype=torch.long) for nt, n in self.num_nodes.items()}
        frontier = {seed_type: self._add(nodes, local, seed_type, inputs.node)}
        rows, cols, edges = {}, {}, {}
        for fanout in self.num_neighbors:
            next_frontier = {}
            for et, (colptr, order, sources) in self.csc.items():
                dst_global = frontier.get(et[2])
                if dst_global is None or dst_global.numel() == 0:
                    continue
                positions, dst_rep = self._pick(colptr, dst_global, fanout)
                if positions.numel() == 0:
                    continue
                src_global = sources[positions]
                new = self._add(nodes, local, et[0], src_global)
                next_frontier[et[0]] = torch.cat([next_frontier.get(et[0], new[:0]), new])
                rows.setdefault(et, []).append(local[et[0]][src_global])
                cols.setdefault(et, []).append(local[et[2]][dst_rep])
                edges.setdefault(et, []).append(order[positions])
            frontier = next_frontier
        cat = lambda parts: torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        return HeteroSamplerOutput(
            node={nt: cat(v) for nt, v in nodes.items()},
            row={et: torch.cat(v) for et, v in rows.items()}, col={et: torch.cat(v) for et, v in cols.items()},
            edge={et: torch.cat(v) for et, v in edges.items()}, metadata=(inputs.input_id, inputs.time))

    def sample_from_edges(self, index, neg_sampling=None):
        raise NotImplementedError("TorchNeighborSampler samples around seed nodes only (node classification)")

    @staticmethod
    def _add(nodes, local, nt, global_ids):
        """Register unseen ``global_ids`` of type ``nt``; returns the newly added ones (the next frontier)."""
        global_ids = torch.unique(global_ids)
        fresh = global_ids[local[nt][global_ids] < 0]
        offset = sum(t.numel() for t in nodes[nt])
        local[nt][fresh] = torch.arange(offset, offset + fresh.numel())
        nodes[nt].append(fresh)
        return fresh

    @staticmethod
    def _pick(colptr, dst, fanout):
        """Positions (into the CSC order) of up to ``fanout`` random in-edges per node of ``dst``."""
        degree = colptr[dst + 1] - colptr[dst]
        dst_rep = torch.repeat_interleave(dst, degree)
        starts = torch.repeat_interleave(colptr[dst] - torch.cumsum(degree, 0) + degree, degree)
        positions = starts + torch.arange(int(degree.sum()))
        if fanout >= 0 and positions.numel():
            # random rank within each node's in-edges; keep the first ``fanout``
            keys = torch.rand(positions.numel()) + torch.repeat_interleave(torch.arange(dst.numel()), degree)
            order = torch.argsort(keys)
            rank = torch.arange(positions.numel()) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
            keep = order[rank < fanout]
            positions, dst_rep = positions[keep], dst_rep[keep]
        return positions, dst_rep


def make_neighbor_loader(data, input_mask: torch.Tensor, num_neighbors: Sequence[int], batch_size: int,
                         shuffle: bool, generator: Optional[torch.Generator] = None):
    """Mini-batches of seed nodes of the target type with their sampled ``len(num_neighbors)``-hop subgraph.

    Each batch is a HeteroData whose first ``batch[target].batch_size`` target nodes are the seeds.
    Uses torch_geometric's ``NeighborLoader`` when its compiled sampler is installed, else the same
    ``NodeLoader`` with :class:`TorchNeighborSampler`.
    """
    target = data.target_node_type
    kwargs = dict(input_nodes=(target, input_mask), batch_size=batch_size, shuffle=shuffle, generator=generator)
    if torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE:
        return NeighborLoader(data, num_neighbors=list(num_neighbors), **kwargs)
    return NodeLoader(data, node_sampler=TorchNeighborSampler(data, num_neighbors), **kwargs)
