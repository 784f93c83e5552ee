"""IMF's contextual relation model (Sec. 3.4): the relation turns a core tensor into an entity transform.

For a query ``(h, r)`` of one modality, with entity embedding ``e`` (``d``) and relation embedding ``rho``
(``d_r``), and a core ``W`` of shape ``(d_r, d, d)`` (TuckER, Balazevic et al. 2019, Eq. 4 in IMF's
notation):

    M_r = Dropout_hidden(W x_1 rho)                        (d, d)   "context transform matrix"
    c   = Dropout_out(BN_1(Dropout_in(BN_0(e)) M_r))       (d,)     contextual entity embedding
    s   = c C^T                                            (N,)     logits against all candidates C (N, d)

Two contraction orders give the same ``c`` (in eval mode); the cheaper one is chosen per batch by FLOPs
(matrix products only, 2 FLOPs per multiply-add; ``B`` queries with ``U`` distinct relations, ``N``
candidates):

* ``relation_first``: contract the core with the ``U`` distinct relations only, ``(U, d_r) @ (d_r, d*d)``,
  then one vector-matrix product per query with the matrix of its relation, on queries packed by relation
  (training) or in chunks of queries (evaluation); never a full ``(B, d, d)`` tensor, forward or backward:
  ``2 U d_r d^2 + 2 B d^2`` per batch, i.e. ``2 d_r d^2 U/B + 2 d^2`` per query.
* ``entity_first``: contract the entities with the core first, ``(B, d) @ (d, d_r*d)``, then each query's
  ``(d_r, d)`` slab with its relation vector: ``2 B d d_r d + 2 B d_r d``, i.e. ``2 d_r d^2 + 2 d_r d`` per
  query. It only wins when nearly every query has its own relation and ``d_r < d``.
* Scoring adds ``2 N d`` per query (``2 B N d`` per batch) for ``c C^T``.

The published code contracts the core once per *query* (``2 d_r d^2 + 2 d^2`` per query, a ``(B, d, d)``
activation): never cheaper than ``relation_first`` since ``U <= B``.

Hidden dropout. The reference drops entries of each query's ``M_r``. That mask cannot be moved past the sum
over ``i`` in ``entity_first``, so while hidden dropout is active (training, ``p > 0``) the scorer always
uses ``relation_first`` and drops entries of the ``U`` distinct matrices: queries that share a relation in
a batch share the mask, but every query's ``M_r`` has exactly the reference's distribution, so the expected
loss and gradient are unchanged (only their variance differs). In eval mode, or with ``p = 0``, both
orders are exact and the cheaper is used.

Speed (CPU measurements in ``benchmarks/train_speed.py`` and ``benchmarks/_profile_notes.md``):

* In training, ``relation_first`` is one autograd node (:class:`_PackedRelationFirst`): the contraction, the
  hidden dropout (a float 0/1 mask, its ``1/(1-p)`` scale folded into the ``(U, d_r)`` relations) and the
  per-query products on the queries packed by relation into a zero-padded ``(U, m, d)`` block (``m``: the
  largest number of queries sharing a relation), so forward and both gradients are one ``bmm`` each that reads
  every ``(d, d)`` matrix in place and writes ``dL/dM`` directly. The chunked gather
  (:class:`_GroupedVectorMatrix`) copied ``B`` matrices three times per step and scattered ``B`` outer products
  back: a third of a 2-thread FB15k-237 step. The padding costs ``2 (U m - B) d^2`` extra FLOPs per product
  (about 3x the few useful ones, far below the relation contraction); a batch that would pad more than
  :data:`MAX_PADDING_FACTOR` rows per query uses the gather path. :meth:`flops` counts useful FLOPs only.
* Dropout masks come from :mod:`imf_kg.scorers.dropout` (same distribution, ~3x cheaper than ``bernoulli_``).
* Evaluation: :meth:`context_matrices` lets a model contract every relation once per evaluation and score
  with :meth:`contextualize_with_matrices` (``2 B d^2`` per batch instead of ``2 U d_r d^2``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from imf_kg.scorers.dropout import keep_mask, module_dropout

ORDERS = ("relation_first", "entity_first")
#: Training uses the packed (padded) grouped product while the packed block has at most this many rows per query.
MAX_PADDING_FACTOR = 16


class _GroupedVectorMatrix(torch.autograd.Function):
    """``out[b] = x[b] @ matrices[index[b]]`` in chunks: at most ``chunk`` gathered ``(d, d)`` matrices exist
    at any time, and backward recomputes them instead of saving a ``(B, d, d)`` tensor."""

    @staticmethod
    def forward(ctx, x, matrices, index, chunk):
        ctx.save_for_backward(x, matrices, index)
        ctx.chunk = chunk
        parts = [
            torch.bmm(x[start:start + chunk].unsqueeze(1), matrices.index_select(0, index[start:start + chunk]))
            for start in range(0, x.shape[0], chunk)
        ]
        return torch.cat(parts, dim=0).squeeze(1) if parts else x.new_zeros(0, matrices.shape[2])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, matrices, index = ctx.saved_tensors
        chunk = ctx.chunk
        grad_out = grad_out.to(matrices.dtype)
        grad_x = grad_matrices = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.cat([
                torch.bmm(grad_out[s:s + chunk].unsqueeze(1),
                          matrices.index_select(0, index[s:s + chunk]).transpose(1, 2)).squeeze(1)
                for s in range(0, x.shape[0], chunk)
            ], dim=0).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_matrices = torch.zeros_like(matrices)
            x_cast = x.to(matrices.dtype)
            for s in range(0, x.shape[0], chunk):  # sum of outer products x_b^T g_b per relation
                outer = torch.bmm(x_cast[s:s + chunk].unsqueeze(2), grad_out[s:s + chunk].unsqueeze(1))
                grad_matrices.index_add_(0, index[s:s + chunk], outer)
        return grad_x, grad_matrices, None, None


class _PackedGroupedProduct(torch.autograd.Function):
    """``out[b] = x[b] @ matrices[index[b]]`` with the queries packed per matrix into a zero-padded block.

    ``slot[b]`` is the position of query ``b`` among the queries of its matrix, ``width`` the largest such count.
    Shapes: x ``(B, d)``, matrices ``(U, d, e)``, index/slot ``(B,)`` -> ``(B, e)``. Forward and backward are one
    ``bmm`` each on ``(U, width, d)`` blocks; no ``(B, d, e)`` tensor is built and ``dL/dmatrices`` is written
    by the ``bmm`` itself (zero where a matrix has no query).
    """

    @staticmethod
    def forward(ctx, x, matrices, index, slot, width):
        packed = matrices.new_zeros(matrices.shape[0], width, x.shape[1])
        packed[index, slot] = x.to(matrices.dtype)
        ctx.save_for_backward(packed, matrices, index, slot)
        return torch.bmm(packed, matrices)[index, slot]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        packed, matrices, index, slot = ctx.saved_tensors
        grad_out = grad_out.to(matrices.dtype)
        grad_packed = grad_out.new_zeros(packed.shape[0], packed.shape[1], grad_out.shape[1])
        grad_packed[index, slot] = grad_out
        grad_x = grad_matrices = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_packed, matrices.transpose(1, 2))[index, slot]
        if ctx.needs_input_grad[1]:
            grad_matrices = torch.bmm(packed.transpose(1, 2), grad_packed)
        return grad_x, grad_matrices, None, None, None


class _PackedRelationFirst(torch.autograd.Function):
    """Training-mode ``relation_first`` in one node: ``M = dropout(rho W)`` for the ``U`` distinct relations, then
    ``out[b] = x[b] @ M[index[b]]`` on the packed block (as :class:`_PackedGroupedProduct`).

    Shapes: x ``(B, d)``, relations ``(U, d_r)``, core ``(d_r, d*d)``, index/slot ``(B,)``, keep ``(U, d*d)`` 0/1
    mask or None -> ``(B, d)``. The dropout scale ``1/(1-p)`` is applied to the ``(U, d_r)`` relations instead of
    the ``(U, d*d)`` product (same value, one pass less), and the backward products use
    the operand layouts MKL runs fastest here (``W dM^T`` rather than ``dM W^T``: about 1.4x on FB15k-237 shapes).
    """

    @staticmethod
    def forward(ctx, x, relations, core, index, slot, width, keep, scale):
        scaled = relations * scale if scale != 1.0 else relations
        matrices = torch.mm(scaled, core)
        if keep is not None:
            matrices.mul_(keep)
        d = x.shape[1]
        matrices = matrices.view(relations.shape[0], d, -1)
        packed = matrices.new_zeros(relations.shape[0], width, d)  # mixed precision: the products' dtype
        packed[index, slot] = x.to(matrices.dtype)
        ctx.save_for_backward(packed, matrices, scaled, core, index, slot, keep)
        ctx.scale = scale
        return torch.bmm(packed, matrices)[index, slot]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        packed, matrices, scaled, core, index, slot, keep = ctx.saved_tensors
        grad_out = grad_out.to(matrices.dtype)
        grad_packed = grad_out.new_zeros(packed.shape[0], packed.shape[1], grad_out.shape[1])
        grad_packed[index, slot] = grad_out
        grad_x = grad_relations = grad_core = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_packed, matrices.transpose(1, 2))[index, slot]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_matrices = torch.bmm(packed.transpose(1, 2), grad_packed).view(packed.shape[0], -1)
            if keep is not None:
                grad_matrices.mul_(keep)
            dtype = grad_matrices.dtype  # backward runs outside autocast: one dtype for every product
            if ctx.needs_input_grad[1]:
                grad_relations = torch.mm(core.to(dtype), grad_matrices.t()).t()
                if ctx.scale != 1.0:
                    grad_relations = grad_relations * ctx.scale
            if ctx.needs_input_grad[2]:
                grad_core = torch.mm(scaled.t().to(dtype).contiguous(), grad_matrices)
        return grad_x, grad_relations, grad_core, None, None, None, None, None


def grouped_by_matrix(x: torch.Tensor, matrices: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b] = x[b] @ matrices[index[b]]``: ``(B, d)``, ``(R, d, e)``, ``(B,)`` -> ``(B, e)``, for evaluation.

    Sorts the queries by matrix and multiplies each group by its matrix in place (a view): exactly ``2 B d e``
    FLOPs and no gathered ``(B, d, e)`` copies. Gathering copies of the matrices (``index_select``) allocated
    fresh pages for every chunk; with two threads on the shared machine those page faults made the gather half of
    an IMF evaluation. Differentiable (plain autograd ops).
    """
    order = torch.argsort(index, stable=True)
    groups, counts = torch.unique_consecutive(index.index_select(0, order), return_counts=True)
    rows = x.index_select(0, order)
    parts, start = [], 0
    for group, count in zip(groups.tolist(), counts.tolist()):
        parts.append(rows[start:start + count] @ matrices[group])
        start += count
    products = torch.cat(parts, dim=0) if parts else x.new_zeros(0, matrices.shape[2])
    return products.index_select(0, torch.argsort(order))


def pack_slots(index: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, int]:
    """``(slot (B,), width)``: the rank of each query among those with the same ``index`` (in batch order) and
    the largest group size; what :class:`_PackedGroupedProduct` takes."""
    counts = torch.bincount(index, minlength=num_groups)
    order = torch.argsort(index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(index)
    slot[order] = torch.arange(index.shape[0], device=index.device) - starts.index_select(0, index[order])
    return slot, int(counts.max()) if index.numel() else 0


class ContextualRelationScorer(nn.Module):
    """TuckER-form contextual relation model of one modality (IMF Sec. 3.4; see the module docstring).

    Args:
        entity_dim: ``d``.
        relation_dim: ``d_r``.
        dropouts: ``(input, hidden, output)`` dropout probabilities; the reference uses (0.3, 0.4, 0.5).
        batch_norm: batch-normalise the entity (``BN_0``) and the contextual embedding (``BN_1``).
        core_init: "tucker" (U(-1, 1), as TuckER) or "xavier" (Xavier-uniform over the 3-D core, as the
            published IMF code; bound about 0.0068 for d = d_r = 256).
        max_gathered_elements: memory budget (in floats) for the matrices gathered per chunk of queries in
            ``relation_first``; the chunk holds ``max(1, budget // d^2)`` queries.

    Shapes:
        contextualize: entities ``(B, d)``, relations ``(U, d_r)``, relation_index ``(B,)`` -> ``(B, d)``.
        forward: ... plus candidates ``(N, d)`` -> ``(B, N)`` logits.
        FLOPs: see :meth:`flops` and the module docstring.
    """

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        dropouts: Sequence[float] = (0.3, 0.4, 0.5),
        batch_norm: bool = True,
        core_init: str = "tucker",
        max_gathered_elements: int = 1 << 22,
    ):
        super().__init__()
        if len(dropouts) != 3:
            raise ValueError(f"dropouts must be (input, hidden, output), got {tuple(dropouts)}")
        if core_init not in ("tucker", "xavier"):
            raise ValueError(f"core_init must be 'tucker' or 'xavier', not {core_init!r}")
        self.entity_dim = int(entity_dim)
        self.relation_dim = int(relation_dim)
        self.core_init = core_init
        self.core = nn.Parameter(torch.empty(self.relation_dim, self.entity_dim, self.entity_dim))
        self.input_norm = nn.BatchNorm1d(self.entity_dim) if batch_norm else nn.Identity()
        self.output_norm = nn.BatchNorm1d(self.entity_dim) if batch_norm else nn.Identity()
        self.input_dropout = nn.Dropout(dropouts[0])
        self.hidden_dropout = nn.Dropout(dropouts[1])
        self.output_dropout = nn.Dropout(dropouts[2])
        self.query_chunk = max(1, int(max_gathered_elements) // (self.entity_dim * self.entity_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.core_init == "tucker":
            nn.init.uniform_(self.core, -1.0, 1.0)
        else:
            nn.init.xavier_uniform_(self.core)
        for norm in (self.input_norm, self.output_norm):
            if isinstance(norm, nn.BatchNorm1d):
                norm.reset_parameters()

    # -------------------------------------------------------------------------------------------- FLOPs
    def flops(self, batch: int, num_unique_relations: int, num_candidates: int = 0) -> dict[str, int]:
        """Matrix-product FLOPs of :meth:`forward` for each contraction order (2 per multiply-add).

        Counts what ``torch.utils.flop_counter.FlopCounterMode`` counts (mm/bmm), not batch-norm or dropout.
        ``num_candidates = 0`` gives the cost of :meth:`contextualize` alone. The per-query products count
        ``2 B d^2`` (useful FLOPs), also in training where the packed ``bmm`` multiplies some zero padding too.
        The key "precomputed" is the cost with the context matrices already contracted (evaluation).
        """
        d, d_r, b, u = self.entity_dim, self.relation_dim, int(batch), int(num_unique_relations)
        scoring = 2 * b * int(num_candidates) * d
        return {
            "relation_first": 2 * u * d_r * d * d + 2 * b * d * d + scoring,
            "entity_first": 2 * b * d * d_r * d + 2 * b * d_r * d + scoring,
            # :meth:`contextualize_with_matrices`, the matrices contracted beforehand (:meth:`context_matrices`)
            "precomputed": 2 * b * d * d + scoring,
        }

    def _hidden_dropout_active(self) -> bool:
        return self.training and self.hidden_dropout.p > 0

    def choose_order(self, batch: int, num_unique_relations: int) -> str:
        """The order :meth:`contextualize` uses: ``relation_first`` while hidden dropout is active, else the one
        with fewer FLOPs (ties go to ``relation_first``, whose memory is ``U d^2`` instead of ``B d_r d``)."""
        if self._hidden_dropout_active():
            return "relation_first"
        cost = self.flops(batch, num_unique_relations)
        return "entity_first" if cost["entity_first"] < cost["relation_first"] else "relation_first"

    # ------------------------------------------------------------------------------------------ forward
    def _normalise(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(norm, nn.BatchNorm1d) and self.training and x.shape[0] == 1:
            # One query has no batch statistics (the reference crashes, IMF_SPEC 11.15): use running ones.
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return norm(x)

    def contextualize(
        self,
        entities: torch.Tensor,
        relations: torch.Tensor,
        relation_index: torch.Tensor | None = None,
        order: str | None = None,
    ) -> torch.Tensor:
        """Contextual entity embeddings ``c = BN_1(Dropout(BN_0(e)) M_r)`` (then output dropout).

        Args:
            entities: ``(B, d)`` query entity embeddings.
            relations: ``(U, d_r)`` embeddings of the distinct relations of the batch (or ``(B, d_r)``, one per
                query, when ``relation_index`` is None).
            relation_index: ``(B,)`` long, row of ``relations`` for each query (e.g. the inverse of
                ``torch.unique(relation_ids, return_inverse=True)``).
            order: force "relation_first" or "entity_first"; None picks by :meth:`choose_order`.

        Returns:
            ``(B, d)``.
        """
        batch, num_unique = entities.shape[0], relations.shape[0]
        if relation_index is None:
            if num_unique != batch:
                raise ValueError(f"without relation_index, relations must have one row per query ({batch}), "
                                 f"got {num_unique}")
            relation_index = torch.arange(batch, device=entities.device)
        if order is None:
            order = self.choose_order(batch, num_unique)
        elif order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
        elif order == "entity_first" and self._hidden_dropout_active():
            raise ValueError("entity_first cannot apply the hidden dropout on M_r; use relation_first in training "
                             "or set the hidden dropout to 0")
        d, d_r = self.entity_dim, self.relation_dim
        x = module_dropout(self.input_dropout, self._normalise(self.input_norm, entities))
        if order == "relation_first":
            context = self._relation_first(x, relations, relation_index)
        else:
            slabs = (x @ self.core.transpose(0, 1).reshape(d, d_r * d)).reshape(batch, d_r, d)
            query_relations = relations.index_select(0, relation_index)
            context = torch.bmm(query_relations.unsqueeze(1), slabs).squeeze(1)
        return module_dropout(self.output_dropout, self._normalise(self.output_norm, context))

    def _relation_first(self, x: torch.Tensor, relations: torch.Tensor, relation_index: torch.Tensor) -> torch.Tensor:
        """``x[b] @ Dropout_hidden(M[relation_index[b]])``: ``(B, d)``. In training, the packed single-node path
        when its padding is small, else the chunked gather; in evaluation :func:`grouped_by_matrix` (exact FLOPs)."""
        num_unique, p = relations.shape[0], float(self.hidden_dropout.p)
        if self.training and x.shape[0] > 0:
            slot, width = pack_slots(relation_index, num_unique)
            if num_unique * width <= MAX_PADDING_FACTOR * x.shape[0]:
                hidden = self.hidden_dropout.training and p > 0
                if hidden and x.device.type != "cpu":  # the device's fused dropout kernel draws the mask fastest
                    matrices = module_dropout(self.hidden_dropout, self.context_matrices(relations))
                    return _PackedGroupedProduct.apply(x, matrices, relation_index, slot, width)
                d = self.entity_dim
                keep = keep_mask((num_unique, d * d), p, x.dtype, x.device, scaled=False) if hidden else None
                return _PackedRelationFirst.apply(x, relations, self.core.reshape(self.relation_dim, d * d),
                                                  relation_index, slot, width, keep, 1.0 / (1.0 - p) if hidden else 1.0)
        matrices = module_dropout(self.hidden_dropout, self.context_matrices(relations))
        if not self.training:
            return grouped_by_matrix(x, matrices, relation_index)
        return _GroupedVectorMatrix.apply(x, matrices, relation_index, self.query_chunk)

    def context_matrices(self, relations: torch.Tensor) -> torch.Tensor:
        """``M_r = W x_1 rho`` (before hidden dropout) for relation embeddings ``(U, d_r)`` -> ``(U, d, d)``:
        one ``(U, d_r) @ (d_r, d*d)`` product."""
        d = self.entity_dim
        return (relations @ self.core.reshape(self.relation_dim, d * d)).reshape(relations.shape[0], d, d)

    def contextualize_with_matrices(self, entities: torch.Tensor, matrices: torch.Tensor,
                                    relation_index: torch.Tensor) -> torch.Tensor:
        """:meth:`contextualize` in eval mode from matrices contracted beforehand (:meth:`context_matrices`).

        Args:
            entities: ``(B, d)``; matrices: ``(R, d, d)``; relation_index: ``(B,)`` long rows of ``matrices``.

        Returns:
            ``(B, d)``, equal to :meth:`contextualize` in eval mode (``2 B d^2`` FLOPs). Hidden dropout cannot be
            applied to shared precomputed matrices, so this refuses to run in training mode.
        """
        if self._hidden_dropout_active():
            raise ValueError("contextualize_with_matrices is for evaluation; in training the hidden dropout acts on "
                             "each batch's matrices (use contextualize)")
        x = module_dropout(self.input_dropout, self._normalise(self.input_norm, entities))
        context = grouped_by_matrix(x, matrices, relation_index)
        return module_dropout(self.output_dropout, self._normalise(self.output_norm, context))

    @staticmethod
    def score_candidates(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """1-N logits ``(B, N) = queries (B, d) @ candidates (N, d)^T``."""
        return queries @ candidates.t()

    def forward(
        self,
        entities: torch.Tensor,
        relations: torch.Tensor,
        candidates: torch.Tensor,
        relation_index: torch.Tensor | None = None,
        order: str | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, N)`` of every candidate tail; arguments as :meth:`contextualize`, candidates ``(N, d)``."""
        return self.score_candidates(self.contextualize(entities, relations, relation_index, order), candidates)

    def extra_repr(self) -> str:
        return (f"entity_dim={self.entity_dim}, relation_dim={self.relation_dim}, core_init={self.core_init!r}, "
                f"query_chunk={self.query_chunk}")


def distinct_relations(relation_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unique (U,), index (B,))`` with ``unique[index] == relation_ids``: what :meth:`contextualize` takes."""
    unique, index = torch.unique(relation_ids, return_inverse=True)
    return unique, index

