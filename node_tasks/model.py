"""HGNN-IMA: input projections -> K HGNN-IMA layers -> modality-gate read-out -> shared classifier.

Li et al., IJCAI 2025; spec sections 2-4 (/work/shared/docs/HGNN_IMA_SPEC.md). The early/late-fusion
baselines live in :mod:`node_tasks.baselines` and return the same :class:`NodeOutputs`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from imf_kg.errors import ConfigError
from node_tasks.layers import EdgeAttention, HGNNIMALayer

ABLATIONS = ("cross", "align", "latt", "lind")
# graph_inputs(sparse_below=...) only considers matrices at least this wide (narrow ones are cheap dense)
SPARSE_MIN_WIDTH = 256


@dataclass
class NodeOutputs:
    """What every node classifier returns for the target nodes of one (sub)graph.

    Attributes:
        logits: fused logits O, (n_target, C).
        modality_logits: modality -> O^m, (n_target, C) (empty for models without per-modality heads).
        modality_masks: modality -> (n_target,) bool, the nodes whose O^m is defined.
        attention: one dict per layer, edge type -> :class:`EdgeAttention` (None unless requested).
    """

    logits: Tensor
    modality_logits: Dict[str, Tensor] = field(default_factory=dict)
    modality_masks: Dict[str, Tensor] = field(default_factory=dict)
    attention: Optional[List[Dict[Tuple[str, str, str], EdgeAttention]]] = None


def normalise_ablations(ablations: Iterable[str]) -> Tuple[str, ...]:
    """``["-cross", "align"]`` -> ``("cross", "align")``; unknown names raise :class:`ConfigError`."""
    names = tuple(str(a).lstrip("-").lower() for a in (ablations or ()))
    unknown = [a for a in names if a not in ABLATIONS]
    if unknown:
        raise ConfigError(f"unknown ablation(s) {unknown}; expected some of {list(ABLATIONS)}")
    return names


def in_dims_from_data(data) -> Dict[str, Dict[str, int]]:
    """node type -> modality -> feature width, for the modalities at least one node of the type has."""
    dims = {}
    for nt in data.node_types:
        dims[nt] = {}
        for m in data.modalities:
            mask = data[nt].get(f"mask_{m}")
            if mask is not None and bool(mask.any()):
                dims[nt][m] = int(data[nt][f"x_{m}"].size(-1))
    return dims


def graph_inputs(data, sparse_below: Optional[float] = None, sparse_min_width: int = SPARSE_MIN_WIDTH):
    """(x_dict, edge_index_dict, mask_dict) with x/mask as node type -> modality -> tensor.

    Args:
        sparse_below: None keeps the stored (dense) features. A fraction: every feature matrix at least
            :data:`SPARSE_MIN_WIDTH` wide whose share of non-zero entries is below it comes back as a sparse
            CSR matrix, with the rows of nodes lacking the modality zeroed. Bag-of-words inputs (IMDB's
            3,065 keywords, ~0.3% non-zero) then cost O(non-zeros) per projection instead of O(n d_in);
            convert once and reuse (:class:`node_tasks.train.NodeClassificationTask` caches it).
        sparse_min_width: narrower matrices stay dense.
    """
    x_dict, mask_dict = {}, {}
    for nt in data.node_types:
        store = data[nt]
        x_dict[nt] = {m: store[f"x_{m}"] for m in data.modalities if f"x_{m}" in store}
        mask_dict[nt] = {m: store[f"mask_{m}"].bool() for m in data.modalities if f"mask_{m}" in store}
        if sparse_below is not None:
            for m, x in x_dict[nt].items():
                if x.dim() == 2 and x.size(1) >= sparse_min_width and x.numel():
                    x = x * mask_dict[nt][m].unsqueeze(-1).to(x.dtype)
                    if float((x != 0).float().mean()) < sparse_below:
                        with warnings.catch_warnings():  # torch flags sparse CSR as beta on every conversion
                            warnings.simplefilter("ignore", UserWarning)
                            x_dict[nt][m] = x.to_sparse_csr()
    return x_dict, data.edge_index_dict, mask_dict


def project(linear: nn.Linear, features: Tensor) -> Tensor:
    """``linear(features)`` for a dense or sparse (COO/CSR) features matrix (n, d_in) -> (n, d_out)."""
    if features.layout == torch.strided:
        return linear(features)
    out = features @ linear.weight.t()
    return out + linear.bias if linear.bias is not None else out


class ModalityGate(nn.Module):
    """Read-out fusion (spec 4; in the code, not the poster).

    w^m = tanh(Dropout_out(u^T Dropout_in(h^m) + b)), omega = softmax over the node's modalities of w,
    z = sum_m omega^m h^m.
    """

    def __init__(self, hidden: int, input_dropout: float = 0.6, score_dropout: float = 0.5):
        super().__init__()
        self.score = nn.Linear(hidden, 1)
        self.input_dropout, self.score_dropout = nn.Dropout(input_dropout), nn.Dropout(score_dropout)

    def reset_parameters(self) -> None:
        self.score.reset_parameters()

    def forward(self, states: Tensor, present: Tensor) -> Tensor:
        """states (M, n, d), present (M, n) bool -> fused (n, d)."""
        w = torch.tanh(self.score_dropout(self.score(self.input_dropout(states)).squeeze(-1)))
        w = w.masked_fill(~present, torch.finfo(w.dtype).min)
        omega = torch.softmax(w, dim=0) * present
        return (omega.unsqueeze(-1) * states).sum(0)


class HGNNIMA(nn.Module):
    """HGNN-IMA node classifier (IJCAI 2025).

    Args:
        data_metadata: (node types, edge types), as ``HeteroData.metadata()``.
        in_dims: node type -> modality -> input width, only for modalities the type has
            (:func:`in_dims_from_data`).
        hidden: state width d. heads: H. layers: K.
        num_classes: C.
        target_node_type: the node type that is classified.
        variant: ``"paper"`` or ``"reference"`` (see :class:`HGNNIMALayer`).
        ablations: any of ``cross`` (uniform lambda), ``align`` (no gamma), ``latt``, ``lind`` (the last two
            only change the loss: :func:`node_tasks.losses.loss_weights_for`).
        missing_modality: ``"mask"`` (default for ``paper``) or ``"placeholder"`` (default for ``reference``).
        input_projection: ``"per_modality"`` (default for ``paper``: tanh(P_t^m x + b_t^m), spec 2) or
            ``"shared"`` (the published missing variant: one P_t per node type, needs equal widths). The default
            for ``reference`` is ``"shared"`` where every node type's modalities have one width, else
            ``"per_modality"`` (the published code would crash there, spec 1.6); see ``repr(model)``.
        dropout: layer dropout; gate_dropout: (input, score) dropouts of the modality gate.
        final_attention: ``"softmax"`` (poster) or ``"product"`` (see :class:`HGNNIMALayer`).
        temperature: factor on g in alpha and gamma; None for the variant's (see :class:`HGNNIMALayer`).
    """

    def __init__(
        self,
        data_metadata: Tuple[Sequence[str], Sequence[Tuple[str, str, str]]],
        in_dims: Dict[str, Dict[str, int]],
        hidden: int,
        heads: int,
        layers: int,
        num_classes: int,
        target_node_type: str,
        variant: str = "paper",
        ablations: Iterable[str] = (),
        missing_modality: Optional[str] = None,
        input_projection: Optional[str] = None,
        dropout: float = 0.2,
        gate_dropout: Tuple[float, float] = (0.6, 0.5),
        use_norm: bool = True,
        final_attention: str = "softmax",
        temperature: Optional[float] = None,
    ):
        super().__init__()
        node_types, edge_types = list(data_metadata[0]), [tuple(e) for e in data_metadata[1]]
        if target_node_type not in node_types:
            raise ConfigError(f"target node type {target_node_type!r} is not among {node_types}")
        self.ablations = normalise_ablations(ablations)
        self.variant = variant
        self.missing_modality = missing_modality or ("placeholder" if variant == "reference" else "mask")
        if input_projection is None:  # the published code shares one projection, which needs equal widths
            equal_widths = all(len(set(d.values())) <= 1 for d in in_dims.values())
            input_projection = "shared" if variant == "reference" and equal_widths else "per_modality"
        self.input_projection = input_projection
        self.target_node_type = target_node_type
        self.modalities = sorted({m for dims in in_dims.values() for m in dims}, key=_first_seen_order(in_dims))
        if self.missing_modality == "placeholder":  # every type carries a state for every modality
            self.modalities_per_type = {nt: list(self.modalities) for nt in node_types}
        else:
            self.modalities_per_type = {nt: [m for m in self.modalities if m in in_dims.get(nt, {})] for nt in node_types}
        if not self.modalities_per_type[target_node_type]:
            raise ConfigError(f"target node type {target_node_type!r} has no modality with features")
        self.in_dims = {nt: dict(in_dims.get(nt, {})) for nt in node_types}

        self.projections = nn.ModuleDict()
        self.placeholders = nn.ParameterDict()  # the constant state of a modality a node type lacks entirely
        for nt in node_types:
            dims = self.in_dims[nt]
            if self.input_projection == "shared" and dims:
                widths = set(dims.values())
                if len(widths) > 1:
                    raise ConfigError(f"input_projection='shared' needs one feature width per node type; "
                                      f"{nt!r} has {dims} (use input_projection=per_modality)")
                self.projections[nt] = nn.Linear(widths.pop(), hidden)
            elif self.input_projection != "shared":
                for m, width in dims.items():
                    self.projections[f"{nt}__{m}"] = nn.Linear(width, hidden)
            for m in self.modalities_per_type[nt]:
                if m not in dims:
                    self.placeholders[f"{nt}__{m}"] = nn.Parameter(torch.zeros(hidden))

        self.layers = nn.ModuleList([
            HGNNIMALayer(hidden, (node_types, edge_types), self.modalities_per_type, heads=heads, variant=variant,
                         dropout=dropout, use_norm=use_norm, cross_modal="cross" not in self.ablations,
                         alignment="align" not in self.ablations, missing_modality=self.missing_modality,
                         final_attention=final_attention, temperature=temperature, output_node_types=[target_node_type] if k == layers - 1 else None)
            for k in range(layers)
        ])
        self.gate = ModalityGate(hidden, *gate_dropout)
        self.classifier = nn.Linear(hidden, num_classes)  # shared by O and every O^m (spec 4)

    @classmethod
    def from_data(cls, data, **kwargs) -> "HGNNIMA":
        """Build from a HeteroData that follows the node_tasks data contract."""
        return cls(data.metadata(), in_dims_from_data(data), num_classes=int(data.num_classes),
                   target_node_type=data.target_node_type, **kwargs)

    def reset_parameters(self) -> None:
        for module in list(self.projections.values()) + list(self.layers) + [self.gate, self.classifier]:
            module.reset_parameters()
        for param in self.placeholders.values():
            nn.init.zeros_(param)

    def project_inputs(self, x_dict, mask_dict):
        """h^(0),m = tanh(P x^m + b) per (node type, modality) (spec 2); node type -> modality -> (n, d).

        A missing modality never reads its features: in mask mode its state is 0 (and stays masked);
        in placeholder mode it is tanh(b), what the published code computes from an all-zero feature.
        """
        h_dict = {}
        for nt, mods in self.modalities_per_type.items():
            if nt not in x_dict or not mods:
                continue
            h_dict[nt] = {}
            for m in mods:
                if m in self.in_dims[nt]:
                    linear = self.projections[nt] if self.input_projection == "shared" else self.projections[f"{nt}__{m}"]
                    present = mask_dict[nt][m].unsqueeze(-1)
                    # what a missing node holds must not matter: it gets tanh(b), the state of an all-zero
                    # row; selecting on the (n, d) output avoids a masked copy of the (n, d_in) features
                    state = torch.tanh(torch.where(present, project(linear, x_dict[nt][m]), linear.bias))
                    if self.missing_modality == "mask":
                        state = state * present
                else:
                    n = _num_nodes(x_dict[nt])
                    state = torch.tanh(self.placeholders[f"{nt}__{m}"]).expand(n, -1)
                h_dict[nt][m] = state
        return h_dict

    def forward(self, x_dict, edge_index_dict, mask_dict, return_attention: bool = False) -> NodeOutputs:
        """Args: x_dict / mask_dict node type -> modality -> (n, d_in) / (n,) bool; edge_index_dict as PyG.

        Returns :class:`NodeOutputs` for every node of the target type (slice for mini-batches).
        """
        h_dict = self.project_inputs(x_dict, mask_dict)
        attention = [] if return_attention else None
        for layer in self.layers:
            if return_attention:
                h_dict, att = layer(h_dict, edge_index_dict, mask_dict, return_attention=True)
                attention.append(att)
            else:
                h_dict = layer(h_dict, edge_index_dict, mask_dict)
        target = self.target_node_type
        mods = self.modalities_per_type[target]
        states = torch.stack([h_dict[target][m] for m in mods])  # (M, n, d)
        if self.missing_modality == "mask":
            present = torch.stack([mask_dict[target][m].bool() for m in mods])
        else:
            present = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        fused = self.gate(states, present)
        logits = self.classifier(fused)
        modality_logits = {m: self.classifier(states[i]) for i, m in enumerate(mods)}
        return NodeOutputs(logits, modality_logits, {m: present[i] for i, m in enumerate(mods)}, attention)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(variant={self.variant!r}, layers={len(self.layers)}, "
                f"modalities={self.modalities}, ablations={list(self.ablations)}, "
                f"missing_modality={self.missing_modality!r}, input_projection={self.input_projection!r})")


def _num_nodes(features_by_modality: Dict[str, Tensor]) -> int:
    return next(iter(features_by_modality.values())).size(0)


def _first_seen_order(in_dims):
    order = {}
    for dims in in_dims.values():
        for m in dims:
            order.setdefault(m, len(order))
    return lambda m: order[m]
