"""Structural encoder: a relation-aware graph attention network trained with a TransE margin loss, then frozen.

IMF (Li et al., WWW 2023, section 3.1) pre-trains a GAT on the training graph with a TransE objective (after
KBGAT, Nathani et al. 2019) and uses the frozen entity vectors as the structural modality. Departures from the
published code (IMF_SPEC section 2), each deliberate:

- messages are relation-aware, ``m_e = W [x_t ; x_h ; r_e]`` (KBGAT eq. 5); the published GAT ignores relations;
- attention is the usual ``softmax(LeakyReLU(a . m_e))`` over a node's incoming edges (the code uses ``exp(-.)``);
- the graph has both directions of every training triple (the reverse edge carries relation ``r + |R|``);
- negatives are filtered with TRAINING triples only (the code also rejects valid/test triples: a leak);
- the output width is ``dim`` (the code's ``dim * heads`` = 512 clashes with IMF's 256).

The aggregation never keeps an ``(edges, heads, dim)`` tensor: because ``m_e`` is linear in its three parts,
``sum_e a_e m_e = (sum_e a_e) W_t x_t + sum_e a_e (W_h x)[h_e] + sum_e a_e (W_r r)[r_e]``; the projections are
computed once per node / relation, the attention logits per edge are sums of per-node scalars, and the two
edge sums stream over edge chunks (:class:`EdgeWeightedSum`). Memory is ``O(edges * heads + nodes * heads *
dim)``, so a full-batch step on FB15k-237 (544k directed edges) fits easily.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imf_kg.errors import ConfigError


class EdgeWeightedSum(torch.autograd.Function):
    """``out[n, h] = sum_{e: rows[e] = n} weights[e, h] * values[cols[e], h]``, computed over edge chunks.

    Shapes: weights ``(E, H)``, values ``(M, H, O)``, rows and cols ``(E,)`` -> ``(num_rows, H, O)``.
    Autograd through gather / multiply / ``index_add`` would keep an ``(E, H, O)`` tensor alive for the backward
    pass (and ``torch.sparse.mm``'s backward builds a dense ``(num_rows, M)`` gradient); here both passes
    stream over chunks of ``chunk`` edges, so only ``(chunk, H, O)`` is ever materialised.
    """

    @staticmethod
    def forward(ctx, weights, values, rows, cols, num_rows: int, chunk: int):
        out = values.new_zeros(num_rows, *values.shape[1:])
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            out.index_add_(0, rows[part], weights[part].unsqueeze(-1) * values[cols[part]])
        ctx.save_for_backward(weights, values, rows, cols)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        weights, values, rows, cols = ctx.saved_tensors
        grad_weights = torch.empty_like(weights) if ctx.needs_input_grad[0] else None
        grad_values = torch.zeros_like(values) if ctx.needs_input_grad[1] else None
        for start in range(0, len(rows), ctx.chunk):
            part = slice(start, start + ctx.chunk)
            grad_rows = grad_out[rows[part]]  # (chunk, H, O)
            if grad_weights is not None:
                grad_weights[part] = (grad_rows * values[cols[part]]).sum(-1)
            if grad_values is not None:
                grad_values.index_add_(0, cols[part], weights[part].unsqueeze(-1) * grad_rows)
        return grad_weights, grad_values, None, None, None, None


def edge_weighted_sum(weights: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      num_rows: int, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """See :class:`EdgeWeightedSum`; ``chunk_elements`` bounds the temporary tensor (default 4M floats)."""
    chunk = max(1, chunk_elements // max(1, values[0].numel()))
    return EdgeWeightedSum.apply(weights, values, rows, cols, num_rows, chunk)


class RelationAwareGATLayer(nn.Module):
    """One multi-head graph attention layer whose messages see the edge's relation (KBGAT eqs. 5-7).

    For an edge ``e = (h --r--> t)`` and head ``k``: ``m_e = W^k [x_t ; x_h ; r]``,
    ``b_e = LeakyReLU(a^k . m_e)``, ``alpha_e = softmax_{e' into t}(b_{e'})``, ``x'_t = sum_e alpha_e m_e``.
    Nodes without incoming edges get zeros (the encoder adds a skip connection).

    Args:
        in_dim: entity input width; relation_dim: relation input width; out_dim: width per head.
        heads: attention heads; concat: concatenate heads (``heads * out_dim``) or average them (``out_dim``).
        dropout: dropout on the attention weights; negative_slope: LeakyReLU slope (0.2 as in GAT).

    Shapes:
        x ``(N, in_dim)``, relations ``(R', relation_dim)``, edge_index ``(2, E)`` as (source, target),
        edge_type ``(E,)`` -> ``(N, heads * out_dim)`` or ``(N, out_dim)``.
    """

    def __init__(self, in_dim: int, relation_dim: int, out_dim: int, heads: int = 1, concat: bool = True,
                 dropout: float = 0.0, negative_slope: float = 0.2):
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.dropout, self.negative_slope = dropout, negative_slope
        # W = [W_t | W_h | W_r] split by input block, so each block projects its own table once
        self.target_projection = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.source_projection = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.relation_projection = nn.Linear(relation_dim, heads * out_dim, bias=False)
        self.attention = nn.Parameter(torch.empty(heads, out_dim))
        self.reset_parameters()

    def reset_parameters(self):
        for linear in (self.target_projection, self.source_projection, self.relation_projection):
            nn.init.xavier_uniform_(linear.weight, gain=math.sqrt(2.0))
        nn.init.xavier_uniform_(self.attention, gain=math.sqrt(2.0))

    def forward(self, x: torch.Tensor, relations: torch.Tensor, edge_index: torch.Tensor,
                edge_type: torch.Tensor) -> torch.Tensor:
        from torch_geometric.utils import softmax as scatter_softmax

        num_nodes, heads, width = x.shape[0], self.heads, self.out_dim
        source, target = edge_index
        target_part = self.target_projection(x).view(num_nodes, heads, width)
        source_part = self.source_projection(x).view(num_nodes, heads, width)
        relation_part = self.relation_projection(relations).view(-1, heads, width)
        # a . m_e splits into per-node and per-relation scalars, gathered per edge: (E, H)
        logits = ((target_part * self.attention).sum(-1)[target] + (source_part * self.attention).sum(-1)[source]
                  + (relation_part * self.attention).sum(-1)[edge_type])
        alpha = scatter_softmax(F.leaky_relu(logits, self.negative_slope), target, num_nodes=num_nodes)
        alpha = F.dropout(alpha, self.dropout, self.training)
        weight_into = torch.zeros(num_nodes, heads, device=x.device, dtype=alpha.dtype).index_add_(0, target, alpha)
        out = (weight_into.unsqueeze(-1) * target_part
               + edge_weighted_sum(alpha, source_part, target, source, num_nodes)
               + edge_weighted_sum(alpha, relation_part, target, edge_type, num_nodes))
        return out.reshape(num_nodes, heads * width) if self.concat else out.mean(1)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, out_dim={self.out_dim}, concat={self.concat}, dropout={self.dropout}"


def training_graph(train: torch.Tensor, num_relations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index (2, 2n), edge_type (2n,))``: each training triple h->t (type r) and t->h (type r + R)."""
    heads, relations, tails = train[:, 0], train[:, 1], train[:, 2]
    edge_index = torch.stack([torch.cat([heads, tails]), torch.cat([tails, heads])])
    return edge_index, torch.cat([relations, relations + num_relations])


class StructureEncoder(nn.Module):
    """IMF's structural encoder: two relation-aware GAT layers over learned entity/relation tables.

    ``entity = normalize(W_E x + ELU(GAT_2(ELU(GAT_1(x)))))``, ``relation = W_R r`` (the skip ``W_E x`` and
    the row normalisation follow KBGAT and the published code). Trained by :func:`fit_structure_encoder`.

    Args:
        num_entities, num_relations: sizes (``num_relations`` without inverses; the table holds ``2R`` rows).
        dim: width of the inputs and of the outputs; heads: heads of the first layer (concatenated).
        dropout: dropout on inputs between layers and on attention weights.

    Shapes:
        ``forward(edge_index (2, E), edge_type (E,))`` -> ``(entity (N, dim), relation (2R, dim))``.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 256, heads: int = 2,
                 dropout: float = 0.3, negative_slope: float = 0.2):
        super().__init__()
        if dim < 1 or heads < 1:
            raise ConfigError(f"structure encoder needs dim >= 1 and heads >= 1, got {dim} and {heads}")
        self.num_entities, self.num_relations, self.dim, self.dropout = num_entities, num_relations, dim, dropout
        self.entity_table = nn.Parameter(torch.randn(num_entities, dim))
        self.relation_table = nn.Parameter(torch.randn(2 * num_relations, dim))
        self.layer1 = RelationAwareGATLayer(dim, dim, dim, heads, concat=True, dropout=dropout,
                                            negative_slope=negative_slope)
        self.layer2 = RelationAwareGATLayer(heads * dim, dim, dim, 1, concat=False, dropout=dropout,
                                            negative_slope=negative_slope)
        self.entity_skip = nn.Linear(dim, dim, bias=False)
        self.relation_output = nn.Linear(dim, dim, bias=False)

    def forward(self, edge_index: torch.Tensor, edge_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # unit-norm inputs as in the published code, done in the graph rather than in place on .data
        x = F.normalize(self.entity_table, dim=1)
        r = F.normalize(self.relation_table, dim=1)
        hidden = F.elu(self.layer1(F.dropout(x, self.dropout, self.training), r, edge_index, edge_type))
        hidden = F.elu(self.layer2(F.dropout(hidden, self.dropout, self.training), r, edge_index, edge_type))
        entity = F.normalize(self.entity_skip(x) + hidden, dim=1)
        return entity, self.relation_output(r)


def transe_distance(entity: torch.Tensor, relation: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
    """TransE energy ``||e_h + r - e_t||_1`` per triple (Bordes et al. 2013): ``(B, 3)`` -> ``(B,)``."""
    return (entity[triples[:, 0]] + relation[triples[:, 1]] - entity[triples[:, 2]]).abs().sum(-1)


class TrainingNegativeSampler:
    """Corrupt heads or tails uniformly, never producing a known TRAINING triple.

    Only training triples are known here, so valid/test triples can be drawn as negatives, as in a real
    training-time setting (the published code filters with valid and test too, which leaks them).

    Args:
        train: ``(n, 3)`` training triples (original relations).
        num_entities, num_relations: sizes.
        max_tries: redraws of a corruption that hits a training triple; one that still hits is dropped.
    """

    def __init__(self, train: torch.Tensor, num_entities: int, num_relations: int, max_tries: int = 10):
        self.num_entities, self.num_relations, self.max_tries = num_entities, num_relations, max_tries
        self.known = torch.unique(self.keys(train.cpu().long()))  # sorted

    def keys(self, triples: torch.Tensor) -> torch.Tensor:
        """One int64 per triple: ``(h * R + r) * N + t``."""
        return (triples[:, 0] * self.num_relations + triples[:, 1]) * self.num_entities + triples[:, 2]

    def is_known(self, triples: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: True where the triple is a training triple."""
        keys = self.keys(triples)
        if len(self.known) == 0:
            return torch.zeros(len(keys), dtype=torch.bool)
        position = torch.searchsorted(self.known, keys).clamp_max(len(self.known) - 1)
        return self.known[position] == keys

    def sample(self, positives: torch.Tensor, per_positive: int = 2,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive_index (M,), negatives (M, 3))``, ``M <= B * per_positive``.

        Copy ``j`` of each positive has its tail corrupted when ``j`` is even and its head when odd (the
        published code draws one of each). ``positive_index`` points each negative at its positive's row.
        """
        positives = positives.cpu().long()
        index = torch.arange(len(positives)).repeat(per_positive)
        negatives = positives[index].clone()
        column = torch.where(torch.arange(per_positive).repeat_interleave(len(positives)) % 2 == 0, 2, 0)
        rows = torch.arange(len(negatives))
        pending = rows
        for _ in range(self.max_tries + 1):
            draws = torch.randint(self.num_entities, (len(pending),), generator=generator)
            negatives[pending, column[pending]] = draws
            pending = pending[self.is_known(negatives[pending])]
            if len(pending) == 0:
                break
        keep = torch.ones(len(negatives), dtype=torch.bool)
        keep[pending] = False
        return index[keep], negatives[keep]


def fit_structure_encoder(
    encoder: StructureEncoder,
    train: torch.Tensor,
    epochs: int = 3000,
    lr: float = 5e-4,
    weight_decay: float = 1e-5,
    margin: float = 1.0,
    negatives_per_positive: int = 2,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``encoder`` in place with the TransE margin loss; returns the mean loss of each epoch.

    ``L = mean max(0, margin + f(pos) - f(neg))`` with ``f`` = :func:`transe_distance` (IMF eq. 1, KBGAT).
    ``batch_size=None`` is full batch (one step per epoch, as the published code); otherwise each step scores
    a mini-batch of triples after a full-graph GAT forward (the graph is cheap, see the module docstring).
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    encoder.to(device).train()
    sampler = TrainingNegativeSampler(train, encoder.num_entities, encoder.num_relations)
    edge_index, edge_type = (t.to(device) for t in training_graph(train.long(), encoder.num_relations))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr, weight_decay=weight_decay)
    train = train.long().cpu()
    step = len(train) if batch_size is None else batch_size
    history = []
    for _ in tqdm(range(epochs), desc="structure", unit="epoch", disable=not progress):
        order = torch.randperm(len(train), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(train), step):
            positives = train[order[start:start + step]]
            positive_index, negatives = sampler.sample(positives, negatives_per_positive, generator)
            if len(negatives) == 0:
                continue  # every corruption of this batch is a training triple (only in tiny dense graphs)
            entity, relation = encoder(edge_index, edge_type)
            positive_distance = transe_distance(entity, relation, positives.to(device))[positive_index.to(device)]
            negative_distance = transe_distance(entity, relation, negatives.to(device))
            loss = F.relu(margin + positive_distance - negative_distance).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(negatives)
            count += len(negatives)
        history.append(total / max(count, 1))
    return history


@torch.no_grad()
def frozen_structure_embeddings(encoder: StructureEncoder, train: torch.Tensor,
                                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(entity (N, d), relation (R, d))`` in eval mode on the CPU, detached (no grad); inverses dropped."""
    encoder.to(device).eval()
    edge_index, edge_type = (t.to(device) for t in training_graph(train.long(), encoder.num_relations))
    entity, relation = encoder(edge_index, edge_type)
    return entity.detach().cpu(), relation[: encoder.num_relations].detach().cpu()


def train_structure_encoder(
    kg,
    dim: int = 256,
    heads: int = 2,
    epochs: int = 3000,
    lr: float = 5e-4,
    weight_decay: float = 1e-5,
    margin: float = 1.0,
    negatives_per_positive: int = 2,
    batch_size: int | None = None,
    dropout: float = 0.3,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-train a :class:`StructureEncoder` on ``kg.train`` and return its frozen outputs.

    Returns:
        ``(entity (N, dim), relation (R, dim))`` CPU tensors without grad (original relations only).
    """
    torch.manual_seed(seed)
    encoder = StructureEncoder(kg.num_entities, kg.num_relations, dim=dim, heads=heads, dropout=dropout)
    fit_structure_encoder(encoder, kg.train, epochs=epochs, lr=lr, weight_decay=weight_decay, margin=margin,
                          negatives_per_positive=negatives_per_positive, batch_size=batch_size, device=device,
                          seed=seed, progress=progress)
    return frozen_structure_embeddings(encoder, kg.train, device)


class StructureEmbedding(nn.Module):
    """A plain learned entity table: the structural modality without a graph encoder (the published default).

    Args:
        num_entities, dim: table size; initialised Xavier-normal as the reference code does.
        initial: optional ``(num_entities, dim)`` starting values (e.g. frozen GAT outputs).
        freeze: keep the table fixed (IMF paper) instead of fine-tuning it (published code).

    Shapes: ``forward(ids (B,))`` -> ``(B, dim)``; ``forward(None)`` -> ``(num_entities, dim)``.
    """

    def __init__(self, num_entities: int, dim: int, initial: torch.Tensor | None = None, freeze: bool = False):
        super().__init__()
        if initial is not None:
            initial = torch.as_tensor(initial, dtype=torch.float32)
            if initial.shape != (num_entities, dim):
                raise ConfigError(f"initial structure embeddings are {tuple(initial.shape)}, "
                                  f"expected ({num_entities}, {dim})")
            weight = initial.clone()
        else:
            weight = nn.init.xavier_normal_(torch.empty(num_entities, dim))
        self.weight = nn.Parameter(weight, requires_grad=not freeze)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.weight if ids is None else self.weight[ids]
