"""One HGNN-IMA layer: a heterogeneous graph transformer with nested inter-modal attention.

Li et al., "Representation Learning with Mutual Influence of Modalities for Node Classification in
Multi-Modal Heterogeneous Networks", IJCAI 2025 (HGNN-IMA); spec section 3 (/work/shared/docs/HGNN_IMA_SPEC.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from imf_kg.errors import ConfigError

NodeType = str
EdgeType = Tuple[str, str, str]
VARIANTS = ("paper", "reference")
MISSING_MODES = ("mask", "placeholder")
FINAL_ATTENTIONS = ("softmax", "product")
# The published code's ("reference") fixed temperature on g: every use of g in its reduce step is x100.
REFERENCE_TEMPERATURE = 100.0


@dataclass
class EdgeAttention:
    """The attention of one layer on one edge type (E edges, H heads, M_e modalities shared by both ends).

    Attributes:
        modalities: names of the M_e modalities, in the order of the first axis below.
        inter_modal: lambda, (M_e, E, H), softmax over modalities of s (poster "inter-modal attention score").
        inter_node: alpha, (M_e, E, H), per-modality softmax over each target's neighbours of g.
        alignment: gamma, (E, H), softmax over neighbours of -mean_{m1<m2} |g^m1 - g^m2| (spec 3.7).
        final: the attention that weights messages, (E, H), softmax over neighbours of beta * gamma.
    """

    modalities: Tuple[str, ...]
    inter_modal: Tensor
    inter_node: Tensor
    alignment: Tensor
    final: Tensor


def _masked_neighbour_softmax(scores: Tensor, active: Tensor, dst: Tensor, num_nodes: int, dim: int) -> Tensor:
    """Softmax over the in-neighbours of each target, ignoring inactive entries (they get weight 0).

    ``finfo.min`` rather than -inf keeps a target whose neighbours are all inactive finite (its weights
    are then multiplied by 0), so no NaN reaches the backward pass.
    """
    scores = scores.masked_fill(~active, torch.finfo(scores.dtype).min)
    return softmax(scores, dst, num_nodes=num_nodes, dim=dim) * active


class HGNNIMALayer(nn.Module):
    r"""The HGNN-IMA layer (IJCAI 2025, poster "Cross-modal Influence Unit" and "Attention Modulation").

    For an edge j -> i of type phi, head h and modality m (k/v from the source type, q from the target
    type; K, Q, V, A are per node type and shared by the modalities):

    - inter-node score (poster g): g^m = mu_{phi,h} k_j^m W^ATT_{phi,h} q_i^m / c
    - inter-modal score (poster s): s^m = k_j^m W^MOD_{m,phi,h} q_i^m / c'
    - lambda = softmax_m(s), alpha^m = softmax_{j in N_phi(i)}(T g^m), b = sum_m lambda^m alpha^m
    - alignment modulation gamma = softmax_j(-mean_{m1<m2} |T g^m1 - T g^m2|) (spec 9.5: the poster's
      formula is ill-posed; this is the code's, and the stated intent's, version)
    - final attention beta = softmax_j(b * gamma); the SAME beta weights every modality's messages
      v_j^m W^MSG_{phi,h}; the sum per edge type is averaged over edge types (spec 3.9), then
      h_i^m <- Dropout(LN(sigmoid(s_tau) A t_i^m + (1 - sigmoid(s_tau)) h_i^m)) (spec 3.10).

    Variants (``variant``):

    - ``"paper"``: c = c' = sqrt(d_k), T = 1, W^MOD Xavier-initialised; the mean over edge types counts
      only the edge types that deliver a message of modality m to node i (spec 10.26 fixed).
    - ``"reference"``: the published code: c = c' = 1 and T = 100, W^MOD ~ N(0, 1), and the mean over
      edge types divides by every edge type that ends at the node's type (DGL ``cross_reducer='mean'``).

    Missing modalities (``missing_modality``):

    - ``"mask"``: a node lacking modality m has no state for m. Modality m takes part in an edge only if
      both ends have it: it is masked out of lambda's softmax over modalities, of alpha^m's softmax over
      neighbours, of the alignment pairs and of the messages; a node without m keeps a zero state for m.
    - ``"placeholder"``: every node has a state for every modality of its type (the model feeds a
      learned constant for missing ones, as the published code does with zero features); the missing
      ones then take part in lambda and are discouraged only by L_att (node_tasks.losses).

    Args:
        hidden: state width d (every modality of every node type), divisible by ``heads``.
        metadata: (node types, edge types) as returned by ``HeteroData.metadata()``.
        modalities_per_type: for every node type, the modalities its nodes may have (others have none).
        heads: number of attention heads H; d_k = hidden / H.
        variant: ``"paper"`` or ``"reference"`` (see above).
        dropout: dropout on the updated states (0.2 in the published code).
        use_norm: LayerNorm after the gated skip (per node type, shared by modalities).
        cross_modal: False replaces lambda by a uniform weight over the active modalities (ablation -cross).
        alignment: False drops gamma, beta = softmax_j(b) (ablation -align).
        missing_modality: ``"mask"`` or ``"placeholder"`` (see above).
        final_attention: how b and gamma combine. ``"softmax"`` (poster and code): softmax_j(b * gamma);
            as b, gamma lie in [0, 1] the weights differ by at most a factor e between neighbours (spec
            3.8), close to mean aggregation. ``"product"``: beta proportional to b * gamma, i.e.
            softmax_j(log b - mean|T g^m1 - T g^m2|), which keeps the sharpness of both factors.
        output_node_types: update only these node types (default: all); the last layer of a classifier
            needs only the target type, so it builds no parameters it would never train.
        temperature: T, the factor on g in alpha and gamma (spec 3.3-3.7). None: the variant's (paper 1,
            reference 100); the published variants use 1, 10 (modal3_missing) and 100 (modal2_missing).

    Node types that no used edge type ends at are passed through unchanged.
    """

    def __init__(
        self,
        hidden: int,
        metadata: Tuple[Sequence[NodeType], Sequence[EdgeType]],
        modalities_per_type: Dict[NodeType, Sequence[str]],
        heads: int = 8,
        variant: str = "paper",
        dropout: float = 0.2,
        use_norm: bool = True,
        cross_modal: bool = True,
        alignment: bool = True,
        missing_modality: str = "mask",
        final_attention: str = "softmax",
        output_node_types: Sequence[NodeType] | None = None,
        temperature: float | None = None,
    ):
        super().__init__()
        if hidden % heads != 0:
            raise ConfigError(f"hidden={hidden} must be divisible by heads={heads}")
        if variant not in VARIANTS:
            raise ConfigError(f"variant={variant!r}; expected one of {VARIANTS}")
        if missing_modality not in MISSING_MODES:
            raise ConfigError(f"missing_modality={missing_modality!r}; expected one of {MISSING_MODES}")
        if final_attention not in FINAL_ATTENTIONS:
            raise ConfigError(f"final_attention={final_attention!r}; expected one of {FINAL_ATTENTIONS}")
        self.final_attention = final_attention
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"temperature={temperature}; expected > 0")
        self.temperature = temperature
        self.hidden, self.heads, self.head_dim = hidden, heads, hidden // heads
        self.node_types = list(metadata[0])
        outputs = set(self.node_types if output_node_types is None else output_node_types)
        self.edge_types = [tuple(e) for e in metadata[1] if e[2] in outputs]
        self.src_types = sorted({et[0] for et in self.edge_types}, key=self.node_types.index)
        self.dst_types = sorted({et[2] for et in self.edge_types}, key=self.node_types.index)
        self.modalities_per_type = {nt: list(modalities_per_type.get(nt, [])) for nt in self.node_types}
        self.variant, self.use_norm = variant, use_norm
        self.cross_modal, self.alignment, self.missing_modality = cross_modal, alignment, missing_modality
        self.edge_modalities = {
            et: [m for m in self.modalities_per_type[et[0]] if m in self.modalities_per_type[et[2]]]
            for et in self.edge_types
        }

        self.key = nn.ModuleDict({nt: nn.Linear(hidden, hidden) for nt in self.src_types})
        self.value = nn.ModuleDict({nt: nn.Linear(hidden, hidden) for nt in self.src_types})
        self.query = nn.ModuleDict({nt: nn.Linear(hidden, hidden) for nt in self.dst_types})
        self.update_proj = nn.ModuleDict({nt: nn.Linear(hidden, hidden) for nt in self.dst_types})
        self.norm = nn.ModuleDict({nt: nn.LayerNorm(hidden) for nt in self.dst_types}) if use_norm else None
        self.skip = nn.ParameterDict({nt: nn.Parameter(torch.empty(1)) for nt in self.dst_types})

        d_k = self.head_dim
        self.w_att = nn.ParameterDict({self._key(et): nn.Parameter(torch.empty(heads, d_k, d_k)) for et in self.edge_types})
        self.w_msg = nn.ParameterDict({self._key(et): nn.Parameter(torch.empty(heads, d_k, d_k)) for et in self.edge_types})
        self.prior = nn.ParameterDict({self._key(et): nn.Parameter(torch.empty(heads)) for et in self.edge_types})
        self.w_mod = nn.ParameterDict({
            self._key(et): nn.Parameter(torch.empty(len(self.edge_modalities[et]), heads, d_k, d_k))
            for et in self.edge_types if len(self.edge_modalities[et]) > 1 and cross_modal
        })
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @staticmethod
    def _key(edge_type: EdgeType) -> str:
        return "__".join(edge_type)

    def reset_parameters(self) -> None:
        for module_dict in (self.key, self.query, self.value, self.update_proj):
            for linear in module_dict.values():
                linear.reset_parameters()
        if self.norm is not None:
            for norm in self.norm.values():
                norm.reset_parameters()
        for param in self.skip.values():
            nn.init.ones_(param)
        for param in self.prior.values():
            nn.init.ones_(param)
        for params in (self.w_att, self.w_msg):
            for param in params.values():
                for head in param:
                    nn.init.xavier_uniform_(head)
        for param in self.w_mod.values():
            if self.variant == "reference":
                nn.init.normal_(param)  # the published code's torch.randn: saturates lambda early (spec 10.20)
            else:
                for matrix in param.view(-1, self.head_dim, self.head_dim):
                    nn.init.xavier_uniform_(matrix)

    def forward(
        self,
        h_dict: Dict[NodeType, Dict[str, Tensor]],
        edge_index_dict: Dict[EdgeType, Tensor],
        mask_dict: Dict[NodeType, Dict[str, Tensor]],
        return_attention: bool = False,
    ):
        """Run one layer.

        Args:
            h_dict: node type -> modality -> states (n_type, hidden), for the modalities of that type.
            edge_index_dict: edge type (src, rel, dst) -> (2, E) indices (row 0 source, row 1 target).
            mask_dict: node type -> modality -> (n_type,) bool, True where the node has the modality.
                Ignored for gating in ``placeholder`` mode (every state then takes part).

        Returns:
            node type -> modality -> new states (n_type, hidden); with ``return_attention`` also
            edge type -> :class:`EdgeAttention`.
        """
        H, d_k = self.heads, self.head_dim
        states, masks, keys, queries, values = {}, {}, {}, {}, {}
        for nt in self.node_types:
            mods = self.modalities_per_type[nt]
            if not mods or nt not in h_dict:
                continue
            stacked = torch.stack([h_dict[nt][m] for m in mods])  # (M_t, n, d)
            states[nt] = stacked
            masks[nt] = self._presence(nt, mods, mask_dict, stacked)
            # K/Q/V once per node and modality, not per edge type (spec 8: the code redoes them per edge type)
            if nt in self.key:
                keys[nt] = self.key[nt](stacked).view(len(mods), -1, H, d_k)
                values[nt] = self.value[nt](stacked).view(len(mods), -1, H, d_k)
            if nt in self.query:
                queries[nt] = self.query[nt](stacked).view(len(mods), -1, H, d_k)

        summed = {nt: torch.zeros_like(states[nt]) for nt in self.dst_types if nt in states}
        counts = {nt: torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device) for nt, x in summed.items()}
        attention = {}
        for et in self.edge_types:
            src_type, _, dst_type = et
            mods = self.edge_modalities[et]
            if et not in edge_index_dict or not mods or src_type not in states or dst_type not in states:
                continue
            src_pos = [self.modalities_per_type[src_type].index(m) for m in mods]
            dst_pos = [self.modalities_per_type[dst_type].index(m) for m in mods]
            message_sum, delivered, att = self._edge_type_messages(
                et, edge_index_dict[et], keys[src_type][src_pos], values[src_type][src_pos],
                queries[dst_type][dst_pos], masks[src_type][src_pos], masks[dst_type][dst_pos],
                states[dst_type].size(1))
            summed[dst_type][dst_pos] += message_sum
            counts[dst_type][dst_pos] += delivered
            if return_attention:
                attention[et] = att

        out = {nt: h_dict[nt] for nt in h_dict if nt not in summed}  # types no edge type ends at
        for nt, stacked in ((nt, states[nt]) for nt in summed):
            if self.variant == "reference":
                # DGL cross_reducer='mean': every edge type ending at this node type counts, even with no edges
                n_types = sum(1 for et in self.edge_types if et[2] == nt)
                denominator = torch.full_like(counts[nt], float(n_types))
            else:
                denominator = counts[nt].clamp(min=1.0)
            aggregated = summed[nt] / denominator.unsqueeze(-1)
            gate = torch.sigmoid(self.skip[nt])
            updated = gate * self.update_proj[nt](aggregated) + (1 - gate) * stacked
            if self.norm is not None:
                updated = self.norm[nt](updated)
            updated = self.dropout(updated)
            if self.missing_modality == "mask":
                updated = updated * masks[nt].unsqueeze(-1)  # no state for a modality the node lacks
            out[nt] = {m: updated[i] for i, m in enumerate(self.modalities_per_type[nt])}
        return (out, attention) if return_attention else out

    def _presence(self, nt: NodeType, mods: List[str], mask_dict, stacked: Tensor) -> Tensor:
        """(M_t, n) bool: which node has which modality (all True in placeholder mode)."""
        if self.missing_modality == "placeholder":
            return torch.ones(stacked.shape[:2], dtype=torch.bool, device=stacked.device)
        return torch.stack([mask_dict[nt][m].to(device=stacked.device, dtype=torch.bool) for m in mods])

    def _edge_type_messages(self, et, edge_index, key, value, query, src_mask, dst_mask, num_dst):
        """Attention and aggregated messages of one edge type.

        Args:
            key, value: source-side (M_e, n_src, H, d_k); query: target-side (M_e, n_dst, H, d_k).
            src_mask, dst_mask: (M_e, n_src) / (M_e, n_dst) presence.

        Returns:
            summed messages (M_e, n_dst, hidden), delivered (M_e, n_dst) 1.0 where at least one active
            message arrived, and the :class:`EdgeAttention`.
        """
        name = self._key(et)
        src, dst = edge_index[0], edge_index[1]
        n_mods = key.size(0)
        if self.variant == "paper":
            scale, temperature = 1.0 / math.sqrt(self.head_dim), 1.0
        else:
            scale, temperature = 1.0, REFERENCE_TEMPERATURE
        if self.temperature is not None:
            temperature = self.temperature
        # mu * W^ATT * scale * T folded into one (H, d_k, d_k) matrix: cheaper than scaling every edge score
        w_att = self.w_att[name] * (self.prior[name] * (scale * temperature)).view(-1, 1, 1)
        # Edge-type transforms depend only on the source node: apply them per source node, then gather.
        source_side = [torch.einsum("mnhd,hde->mnhe", key, w_att)]
        use_modal_attention = n_mods > 1 and self.cross_modal
        if use_modal_attention:
            source_side.append(torch.einsum("mnhd,mhde->mnhe", key, self.w_mod[name] * scale))
        source_side = torch.cat(source_side).index_select(1, src)  # (S * M_e, E, H, d_k)
        query_dst = query.index_select(1, dst)  # (M_e, E, H, d_k)
        scores = (source_side.view(-1, n_mods, *source_side.shape[1:]) * query_dst).sum(-1)  # (S, M_e, E, H)
        node_score = scores[0]  # T * g
        active = src_mask.index_select(1, src) & dst_mask.index_select(1, dst)  # (M_e, E)
        all_active = bool(active.all())
        active_h = active.unsqueeze(-1).expand(-1, -1, self.heads)

        if use_modal_attention:
            modal_score = scores[1]  # s
            if not all_active:
                modal_score = modal_score.masked_fill(~active_h, torch.finfo(modal_score.dtype).min)
            inter_modal = torch.softmax(modal_score, dim=0)
            if not all_active:
                inter_modal = inter_modal * active_h
        else:  # -cross ablation (or a single shared modality): uniform over the active modalities
            inter_modal = (active_h / active_h.sum(0, keepdim=True).clamp(min=1)).to(node_score.dtype)
        if all_active:
            inter_node = softmax(node_score, dst, num_nodes=num_dst, dim=1)
        else:
            inter_node = _masked_neighbour_softmax(node_score, active_h, dst, num_dst, dim=1)
        cross = (inter_modal * inter_node).sum(0)  # b, (E, H)

        if self.alignment:
            disagreement = torch.zeros_like(cross)
            pairs = torch.zeros_like(cross)
            for a in range(n_mods):
                for b in range(a + 1, n_mods):
                    both = (active_h[a] & active_h[b]).to(cross.dtype)
                    disagreement = disagreement + both * (node_score[a] - node_score[b]).abs()
                    pairs = pairs + both
            consistency = -disagreement / pairs.clamp(min=1)
            alignment = softmax(consistency, dst, num_nodes=num_dst, dim=0)
        else:
            consistency = torch.zeros_like(cross)
            alignment = torch.ones_like(cross)
        if self.final_attention == "softmax":
            final = softmax(cross * alignment if self.alignment else cross, dst, num_nodes=num_dst, dim=0)
        else:  # gamma's normaliser is constant per target and cancels: beta = softmax_j(log b + consistency)
            final = softmax(torch.log(cross.clamp(min=1e-30)) + consistency, dst, num_nodes=num_dst, dim=0)

        # The same final attention weights every modality's messages; a source without m sends nothing for m.
        message = torch.einsum("mnhd,hde->mnhe", value, self.w_msg[name]).index_select(1, src)
        weight = final.unsqueeze(0) if all_active else final.unsqueeze(0) * active_h
        weighted = message * weight.unsqueeze(-1)  # (M_e, E, H, d_k)
        summed = scatter(weighted.reshape(n_mods, -1, self.hidden), dst, dim=1, dim_size=num_dst, reduce="sum")
        delivered = scatter(active.to(summed.dtype), dst, dim=1, dim_size=num_dst, reduce="max")
        att = EdgeAttention(tuple(self.edge_modalities[et]), inter_modal, inter_node, alignment, final)
        return summed, delivered, att

    def __repr__(self) -> str:
        # cross_modal as it acts: with at most one modality shared across every edge type lambda is 1
        # either way, so the -cross ablation is then the same computation (compare reuses its runs)
        return (f"{self.__class__.__name__}({self.hidden}, heads={self.heads}, variant={self.variant!r}, "
                f"dropout={self.dropout.p}, use_norm={self.use_norm}, "
                f"cross_modal={self.cross_modal and len(self.w_mod) > 0}, alignment={self.alignment}, "
                f"missing_modality={self.missing_modality!r}, final_attention={self.final_attention!r}, "
                f"temperature={self.temperature}, edge_types={len(self.edge_types)})")
