"""Baselines of the HGNN-IMA comparison: HGT with early or late fusion, and an MLP on a node's own features.

The poster's "HGT early" concatenates the modalities before the graph model; "HGT late" runs one model per
modality and averages the predictions. All return :class:`node_tasks.model.NodeOutputs`.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import Tensor, nn
from torch_geometric.nn import HGTConv

from imf_kg.errors import ConfigError
from node_tasks.model import NodeOutputs, in_dims_from_data, project


class ConcatLinear(nn.Module):
    """A linear map of the concatenated modalities ``[x^m1 | x^m2 | ...]``, computed block by block.

    out = sum_m present^m * (x^m W_m^T) + b, (n, out): identical to ``nn.Linear`` on the concatenation of
    the modalities with missing ones zeroed (and initialised from the same distribution, U(+-1/sqrt(fan_in))
    with fan_in the concatenated width), but it never materialises the (n, sum d_m) concatenation, accepts
    sparse blocks (:func:`node_tasks.model.project`) and skips the masked copy of every feature matrix.
    With no modality at all it is a learned constant b (what ``Linear(1, out)`` gives a zero column).
    """

    def __init__(self, widths: Dict[str, int], out_features: int):
        super().__init__()
        self.widths = dict(widths)
        self.blocks = nn.ModuleDict({m: nn.Linear(w, out_features, bias=False) for m, w in self.widths.items()})
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(max(sum(self.widths.values()), 1))
        for block in self.blocks.values():
            nn.init.uniform_(block.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: Dict[str, Tensor], present: Dict[str, Tensor], num_nodes: int) -> Tensor:
        """features / present: modality -> (n, d_m) / (n,) bool for the modalities of ``widths``."""
        out = self.bias.expand(num_nodes, -1)
        for m, block in self.blocks.items():
            out = out + torch.where(present[m].unsqueeze(-1), project(block, features[m]), 0.0)
        return out


class VectorisedHGTConv(HGTConv):
    """torch_geometric's ``HGTConv``, with its relation transforms (k_rel, v_rel) applied as one einsum
    per edge type.

    Same parameters, same results. Without the compiled ``pyg-lib``, ``HeteroLinear`` falls back to a Python
    loop that writes each of the heads x edge-types blocks into a slice of one output; autograd then copies
    the whole (heads x sum n_src, d_k) buffer once per block (IMDB, HGT late fusion: ~90% of an epoch).
    """

    def _construct_src_node_feat(self, k_dict, v_dict, edge_index_dict):
        H, D = self.heads, self.out_channels // self.heads
        num_edge_types = len(self.edge_types)
        # HeteroLinear weight (H * |R|, D, D); type id = head * |R| + edge type id (HGTConv's type_vec)
        k_weight = self.k_rel.weight.view(H, num_edge_types, D, D)
        v_weight = self.v_rel.weight.view(H, num_edge_types, D, D)
        keys, values, offset, cumsum = [], [], {}, 0
        for edge_type in edge_index_dict.keys():
            src, rel = edge_type[0], self.edge_types_map[edge_type]
            offset[edge_type] = cumsum
            cumsum += k_dict[src].size(0)
            keys.append(torch.einsum("nhd,hde->nhe", k_dict[src], k_weight[:, rel]))
            values.append(torch.einsum("nhd,hde->nhe", v_dict[src], v_weight[:, rel]))
        return torch.cat(keys), torch.cat(values), offset


class HGTEncoder(nn.Module):
    """tanh(ConcatLinear) input projection per node type, then ``layers`` HGTConv (Hu et al., WWW 2020).

    Args:
        metadata: (node types, edge types). in_dims: node type -> modality -> input width; the modalities
            listed for a type are concatenated (early fusion); a type with none gets a learned constant.
        hidden, heads, layers: HGT sizes. dropout: on the states between layers.
        use_norm: LayerNorm per node type after every layer, as the HGT of Hu et al. (WWW 2020) has it
            (``use_norm`` in their code, and in HGNN-IMA's layer, spec 3.10); torch_geometric's ``HGTConv`` has none.
    """

    def __init__(self, metadata, in_dims: Dict[str, Dict[str, int]], hidden: int, heads: int, layers: int,
                 dropout: float = 0.2, use_norm: bool = False):
        super().__init__()
        node_types = list(metadata[0])
        edge_types = [tuple(e) for e in metadata[1]]
        self.node_types, self.edge_types = node_types, edge_types
        self.projections = nn.ModuleDict({nt: ConcatLinear(in_dims.get(nt, {}), hidden) for nt in node_types})
        self.convs = nn.ModuleList([VectorisedHGTConv(hidden, hidden, (node_types, edge_types), heads=heads)
                                    for _ in range(layers)])
        self.norms = nn.ModuleList([nn.ModuleDict({nt: nn.LayerNorm(hidden) for nt in node_types}) for _ in range(layers)]) \
            if use_norm else None
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        norms = [norm for layer in (self.norms or []) for norm in layer.values()]
        for module in list(self.projections.values()) + list(self.convs) + norms:
            module.reset_parameters()

    def forward(self, x_dict, mask_dict, edge_index_dict) -> Dict[str, Tensor]:
        """x_dict / mask_dict: node type -> modality -> (n, d_m) / (n,) bool -> node type -> (n, hidden)."""
        h = {nt: torch.tanh(self.projections[nt](x_dict[nt], mask_dict[nt], _num_nodes(x_dict[nt])))
             for nt in self.node_types if nt in x_dict}
        edges = {et: ei for et, ei in edge_index_dict.items() if tuple(et) in self.edge_types}
        for k, conv in enumerate(self.convs):
            new = conv(h, edges)
            if self.norms is not None:
                new = {nt: self.norms[k][nt](x) if x is not None else None for nt, x in new.items()}
            # HGTConv returns None for a type that receives no message: keep its previous state
            h = {nt: self.dropout(new[nt]) if new.get(nt) is not None else h[nt] for nt in h}
        return h


def _num_nodes(features_by_modality: Dict[str, Tensor]) -> int:
    return next(iter(features_by_modality.values())).size(0)


class HGTEarlyFusion(nn.Module):
    """HGT early fusion: every node's modalities are concatenated, then one HGT and a linear classifier."""

    def __init__(self, metadata, in_dims: Dict[str, Dict[str, int]], hidden: int, heads: int, layers: int,
                 num_classes: int, target_node_type: str, dropout: float = 0.2, use_norm: bool = False):
        super().__init__()
        self.target_node_type = target_node_type
        self.in_dims = {nt: in_dims.get(nt, {}) for nt in metadata[0]}
        self.encoder = HGTEncoder(metadata, self.in_dims, hidden, heads, layers, dropout, use_norm)
        self.classifier = nn.Linear(hidden, num_classes)

    @classmethod
    def from_data(cls, data, **kwargs):
        return cls(data.metadata(), in_dims_from_data(data), num_classes=int(data.num_classes),
                   target_node_type=data.target_node_type, **kwargs)

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        h = self.encoder(x_dict, mask_dict, edge_index_dict)
        return NodeOutputs(self.classifier(h[self.target_node_type]))


class HGTLateFusion(nn.Module):
    """HGT late fusion: one HGT + classifier per modality; O = mean over modalities of O^m.

    Every modality's HGT runs on the whole graph; nodes (and node types) without modality m enter it
    with a learned constant state (what zero features give), so they only relay messages. A target node without m contributes its other
    modalities only (the mean runs over the modalities it has).
    """

    def __init__(self, metadata, in_dims: Dict[str, Dict[str, int]], hidden: int, heads: int, layers: int,
                 num_classes: int, target_node_type: str, dropout: float = 0.2, use_norm: bool = False):
        super().__init__()
        self.target_node_type = target_node_type
        self.modalities = list(in_dims[target_node_type])
        if not self.modalities:
            raise ConfigError(f"target node type {target_node_type!r} has no modality with features")
        self.in_dims = {nt: in_dims.get(nt, {}) for nt in metadata[0]}
        self.encoders = nn.ModuleDict({
            m: HGTEncoder(metadata, {nt: {m: self.in_dims[nt][m]} if m in self.in_dims[nt] else {} for nt in metadata[0]},
                          hidden, heads, layers, dropout, use_norm)
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
            logits[m] = self.classifiers[m](self.encoders[m](x_dict, mask_dict, edge_index_dict)[target])
            masks[m] = mask_dict[target][m].bool()
        stacked = torch.stack([logits[m] for m in self.modalities])  # (M, n, C)
        present = torch.stack([masks[m] for m in self.modalities]).unsqueeze(-1).to(stacked.dtype)
        fused = (stacked * present).sum(0) / present.sum(0).clamp(min=1)
        return NodeOutputs(fused, logits, masks)


class FeatureMLP(nn.Module):
    """MLP on the target node's own concatenated modalities (no graph): Linear-ReLU-Dropout stack (its first
    Linear is a :class:`ConcatLinear`, so the modalities are never concatenated in memory)."""

    def __init__(self, in_dims: Dict[str, Dict[str, int]], hidden: int, layers: int, num_classes: int,
                 target_node_type: str, dropout: float = 0.2):
        super().__init__()
        self.target_node_type = target_node_type
        self.first = ConcatLinear(in_dims[target_node_type], hidden if layers > 1 else num_classes)
        blocks = []  # after ``first``: (ReLU, Dropout, Linear) x (layers - 1), the last Linear to the classes
        for k in range(1, max(layers, 1)):
            blocks += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes if k == layers - 1 else hidden)]
        self.net = nn.Sequential(*blocks)

    @classmethod
    def from_data(cls, data, hidden: int, layers: int, dropout: float = 0.2, **_graph_kwargs):
        return cls(in_dims_from_data(data), hidden, layers, int(data.num_classes), data.target_node_type, dropout)

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        target = self.target_node_type
        return NodeOutputs(self.net(self.first(x_dict[target], mask_dict[target], _num_nodes(x_dict[target]))))
