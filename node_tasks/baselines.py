"""Baselines of the HGNN-IMA comparison: HGT with early or late fusion, and an MLP on a node's own features.

The poster's "HGT early" concatenates the modalities before the graph model; "HGT late" runs one model per
modality and averages the predictions. All return :class:`node_tasks.model.NodeOutputs`.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn
from torch_geometric.nn import HGTConv

from imf_kg.errors import ConfigError
from node_tasks.model import NodeOutputs, in_dims_from_data


def _concatenated_inputs(x_dict, mask_dict, in_dims) -> Dict[str, Tensor]:
    """node type -> (n, sum of its modality widths): features of missing modalities are zeroed; a type
    with no modality at all gets one zero column, so it still relays messages in the graph."""
    out = {}
    for nt, dims in in_dims.items():
        if nt not in x_dict:
            continue
        if dims:
            out[nt] = torch.cat([x_dict[nt][m] * mask_dict[nt][m].unsqueeze(-1) for m in dims], dim=-1)
        else:
            out[nt] = _zeros_column(x_dict[nt])
    return out


def _zeros_column(features_by_modality: Dict[str, Tensor]) -> Tensor:
    any_features = next(iter(features_by_modality.values()))
    return any_features.new_zeros(any_features.size(0), 1)


class HGTEncoder(nn.Module):
    """tanh(Linear) input projection per node type, then ``layers`` HGTConv (Hu et al., WWW 2020).

    Args:
        metadata: (node types, edge types). in_dims: node type -> input width (>= 1 for every type).
        hidden, heads, layers: HGT sizes. dropout: on the states between layers.
    """

    def __init__(self, metadata, in_dims: Dict[str, int], hidden: int, heads: int, layers: int, dropout: float = 0.2):
        super().__init__()
        node_types = list(metadata[0])
        edge_types = [tuple(e) for e in metadata[1]]
        self.node_types, self.edge_types = node_types, edge_types
        self.projections = nn.ModuleDict({nt: nn.Linear(in_dims[nt], hidden) for nt in node_types})
        self.convs = nn.ModuleList([HGTConv(hidden, hidden, (node_types, edge_types), heads=heads) for _ in range(layers)])
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in list(self.projections.values()) + list(self.convs):
            module.reset_parameters()

    def forward(self, x_dict: Dict[str, Tensor], edge_index_dict) -> Dict[str, Tensor]:
        """x_dict node type -> (n, in_dim) -> node type -> (n, hidden)."""
        h = {nt: torch.tanh(self.projections[nt](x_dict[nt])) for nt in self.node_types if nt in x_dict}
        edges = {et: ei for et, ei in edge_index_dict.items() if tuple(et) in self.edge_types}
        for conv in self.convs:
            new = conv(h, edges)
            # HGTConv returns None for a type that receives no message: keep its previous state
            h = {nt: self.dropout(new[nt]) if new.get(nt) is not None else h[nt] for nt in h}
        return h


class HGTEarlyFusion(nn.Module):
    """HGT early fusion: every node's modalities are concatenated, then one HGT and a linear classifier."""

    def __init__(self, metadata, in_dims: Dict[str, Dict[str, int]], hidden: int, heads: int, layers: int,
                 num_classes: int, target_node_type: str, dropout: float = 0.2):
        super().__init__()
        self.target_node_type = target_node_type
        widths = {nt: sum(in_dims.get(nt, {}).values()) or 1 for nt in metadata[0]}
        self.in_dims = {nt: in_dims.get(nt, {}) for nt in metadata[0]}
        self.encoder = HGTEncoder(metadata, widths, hidden, heads, layers, dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    @classmethod
    def from_data(cls, data, **kwargs):
        return cls(data.metadata(), in_dims_from_data(data), num_classes=int(data.num_classes),
                   target_node_type=data.target_node_type, **kwargs)

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        h = self.encoder(_concatenated_inputs(x_dict, mask_dict, self.in_dims), edge_index_dict)
        return NodeOutputs(self.classifier(h[self.target_node_type]))


class HGTLateFusion(nn.Module):
    """HGT late fusion: one HGT + classifier per modality; O = mean over modalities of O^m.

    Every modality's HGT runs on the whole graph; nodes (and node types) without modality m enter it
    with zero features, so they only relay messages. A target node without m contributes its other
    modalities only (the mean runs over the modalities it has).
    """

    def __init__(self, metadata, in_dims: Dict[str, Dict[str, int]], hidden: int, heads: int, layers: int,
                 num_classes: int, target_node_type: str, dropout: float = 0.2):
        super().__init__()
        self.target_node_type = target_node_type
        self.modalities = list(in_dims[target_node_type])
        if not self.modalities:
            raise ConfigError(f"target node type {target_node_type!r} has no modality with features")
        self.in_dims = {nt: in_dims.get(nt, {}) for nt in metadata[0]}
        self.encoders = nn.ModuleDict({
            m: HGTEncoder(metadata, {nt: self.in_dims[nt].get(m, 1) for nt in metadata[0]}, hidden, heads, layers, dropout)
            for m in self.modalities
        })
        self.classifiers = nn.ModuleDict({m: nn.Linear(hidden, num_classes) for m in self.modalities})

    @classmethod
    def from_data(cls, data, **kwargs):
        return cls(data.metadata(), in_dims_from_data(data), num_classes=int(data.num_classes),
                   target_node_type=data.target_node_type, **kwargs)

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        target = self.target_node_type
        logits, masks = {}, {}
        for m in self.modalities:
            inputs = {nt: (x_dict[nt][m] * mask_dict[nt][m].unsqueeze(-1)) if m in self.in_dims[nt]
                      else _zeros_column(x_dict[nt]) for nt in self.encoders[m].node_types if nt in x_dict}
            logits[m] = self.classifiers[m](self.encoders[m](inputs, edge_index_dict)[target])
            masks[m] = mask_dict[target][m].bool()
        stacked = torch.stack([logits[m] for m in self.modalities])  # (M, n, C)
        present = torch.stack([masks[m] for m in self.modalities]).unsqueeze(-1).to(stacked.dtype)
        fused = (stacked * present).sum(0) / present.sum(0).clamp(min=1)
        return NodeOutputs(fused, logits, masks)


class FeatureMLP(nn.Module):
    """MLP on the target node's own concatenated modalities (no graph): Linear-ReLU-Dropout stack."""

    def __init__(self, in_dims: Dict[str, Dict[str, int]], hidden: int, layers: int, num_classes: int,
                 target_node_type: str, dropout: float = 0.2):
        super().__init__()
        self.target_node_type = target_node_type
        self.target_dims = {target_node_type: in_dims[target_node_type]}
        width = sum(in_dims[target_node_type].values())
        blocks, size = [], width
        for _ in range(max(layers - 1, 0)):
            blocks += [nn.Linear(size, hidden), nn.ReLU(), nn.Dropout(dropout)]
            size = hidden
        blocks.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*blocks)

    @classmethod
    def from_data(cls, data, hidden: int, layers: int, dropout: float = 0.2, **_graph_kwargs):
        return cls(in_dims_from_data(data), hidden, layers, int(data.num_classes), data.target_node_type, dropout)

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        features = _concatenated_inputs(x_dict, mask_dict, self.target_dims)[self.target_node_type]
        return NodeOutputs(self.net(features))
