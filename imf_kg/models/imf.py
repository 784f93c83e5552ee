"""IMF: Interactive Multimodal Fusion for link prediction (Li et al., WWW 2023), forward readable top to bottom.

    modality embeddings  e^m (N, d)      structure table / frozen vectors; text, image, ... features -> d
    first-stage fusion   e^f = F(e^1..e^M)                        TuckerFusion (IMF Eq. 1), per entity
    contextual scorers   s^m = ContextualRelationScorer_m(e^m_h, r^m) C^m^T   one per modality + one fused
    decision fusion      s   = logit(sum_m w_m sigmoid(s^m))      learned weights (Sec. 3.5)
    loss (Algorithm 1)   sum_m BCE(s^m, y) + BCE(s, y) + lambda * InfoNCE(h^1 .. h^M)   h^m: modality m inside F

Choices the paper leaves open, and what we do (the "paper" variant):

* Relation of the fused scorer. Relation embeddings carry no modality content: every per-modality relation
  table is a free parameter, so fusing them (as the published code does) is only an over-parameterised free
  table. The fused scorer therefore gets its own learned relation table (``relation_fusion="table"``);
  ``"fuse"`` fuses the per-modality tables with a second fusion module, as the code does.
* Missing modalities: an entity without a modality gets one learned vector (before the projection to
  ``d``), not the mean of the other entities; its feature row is never read.
* Gradients into the modality embeddings. In the paper the encoders are frozen, so the fusion and the fused
  scorer never change a modality's embedding. We keep that when an embedding is trainable (a learned
  structure table, the feature projections): the fusion reads the embeddings detached
  (``detach_fusion_inputs``), and each embedding is trained by its own scorer only. Letting the fused branch
  train them cut the structure scorer's valid MRR on UMLS from 0.76 to 0.63 and the decision output's from
  0.74 to 0.65 (structure + MiniLM text, d = 64, 30 epochs, one seed; the reference variant does train
  them jointly).
* Contrastive term: InfoNCE over the *distinct* query entities of the batch (a repeated entity would be its
  own negative), on each modality's representation inside the fusion module (Tucker: the unified-space
  vectors ``h_m``; what the paper constrains, and what is trainable when the embeddings are frozen or
  detached), skipping entities that lack a modality.
* Candidates: all entities' modality embeddings and fused embeddings are computed once per training batch
  (fused in slices of ``candidate_chunk_size`` rows) and the query rows are taken from them, so the fusion
  runs once per entity per batch (the published code fuses the queries a second time). The loss needs, per
  batch: every entity's embedding of every modality and its fused embedding (1-N scoring), the query rows
  of each, and the distinct query entities' modality embeddings (contrastive term). In evaluation,
  :meth:`prepare_evaluation` computes them once for the whole pass, and also every relation's context
  matrix ``M_r`` of every branch (``2 R d_r d^2`` FLOPs once, instead of ``2 U d_r d^2`` per batch; kept while
  they fit ``relation_matrix_cache_bytes`` per branch, 76 MB for FB15k-237 at d = 200).

The "reference" variant (``IMFConfig.for_variant("reference")``) keeps the published code's behaviour
(IMF_SPEC Sec. 0 and 13): MUTAN fusion of entities and of learned relation tables, trainable feature tables
already pooled to ``entity_dim`` by the caller (missing rows filled with the mean), Xavier cores, uniform
average of the sigmoids, and the sum of the per-output BCE losses (label smoothing is the task's).
"""

from __future__ import annotations

import functools
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from imf_kg.decision import DecisionFusion
from imf_kg.errors import ConfigError
from imf_kg.fusion import build_fusion, info_nce, reference_contrastive_loss
from imf_kg.models.base import LinkPredictor
from imf_kg.models.imf_config import (  # noqa: F401  (VARIANTS re-exported: imported from here elsewhere)
    DECISION, RELATION_MATRIX_CACHE_BYTES, STRUCTURE, VARIANTS, IMFConfig,
)
from imf_kg.scorers import (
    ContextualRelationScorer, bce_with_logits, distinct_relations, label_distribution, softmax_cross_entropy,
)


class LearnedEntityTable(nn.Module):
    """A free ``(N, d)`` embedding table (Xavier-normal, as the published code's structure table)."""

    def __init__(self, num_entities: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_entities, dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, d)``, or the given rows; the table itself, not a view of it, when ``rows`` is None."""
        return self.weight if rows is None else self.weight[rows]


class FeatureModalityEmbedding(nn.Module):
    """Entity features of one modality -> ``(N, d)`` embeddings.

    ``values (N, d_m)`` (rows L2-normalised if asked), rows with ``mask`` False replaced by a learned vector
    (``missing="learned"``) or, once at construction, by the mean of the present rows (``"mean"``), then an
    optional linear projection ``d_m -> d``. The values are a fixed buffer or a trainable parameter.
    The feature row of an absent entity is zeroed at construction and never read.
    """

    def __init__(self, values: torch.Tensor, mask: torch.Tensor, out_dim: int, trainable: bool = False,
                 missing: str = "learned", project: bool = True, normalize: bool = True, name: str = ""):
        super().__init__()
        values = torch.as_tensor(values, dtype=torch.float32)
        mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        if values.dim() != 2 or mask.shape[0] != values.shape[0]:
            raise ConfigError(f"modality {name!r}: values {tuple(values.shape)} and mask {tuple(mask.shape)}; "
                              "expected (num_entities, dim) and (num_entities,)")
        if not project and values.shape[1] != out_dim:
            raise ConfigError(f"modality {name!r} has {values.shape[1]} features but entity_dim={out_dim}; without "
                              "project_features they must match (pool the features to entity_dim first)")
        if normalize:
            values = F.normalize(values, dim=1)
        values = torch.where(mask.unsqueeze(1), values, torch.zeros((), dtype=values.dtype))  # NaN rows too
        # Frozen inputs are data, not learned state: rebuilt from the features, so kept out of checkpoints
        # (an image matrix alone can be hundreds of MB).
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("missing_rows", (~mask).nonzero().reshape(-1), persistent=False)
        self.learned_missing = missing == "learned"
        if self.learned_missing:
            self.missing_vector = nn.Parameter(torch.randn(values.shape[1]) / values.shape[1] ** 0.5)
        elif mask.any():
            values = torch.where(mask.unsqueeze(1), values, values[mask].mean(dim=0, keepdim=True))
        if trainable:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values, persistent=False)
        self.projection = nn.Linear(values.shape[1], out_dim) if project else None

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, d)`` embeddings, or those of ``rows`` ``(n,)``."""
        x = self.values if rows is None else self.values[rows]
        if not self.learned_missing:
            return self.projection(x) if self.projection is not None else x
        if self.projection is None:
            mask = self.mask if rows is None else self.mask[rows]
            return torch.where(mask.unsqueeze(1), x, self.missing_vector.to(x.dtype))
        # row-wise projection: project every row, then overwrite absent rows with the projected learned vector (a
        # full-size where over the wider features first was 10% of an FB15k-237 IMF step)
        out = self.projection(x)
        missing = self.missing_rows if rows is None else (~self.mask[rows]).nonzero().reshape(-1)
        if missing.numel() > 0:
            vector = self.projection(self.missing_vector.to(x.dtype).unsqueeze(0))
            out = out.index_copy(0, missing, vector.expand(missing.shape[0], -1))
        return out


class IMF(LinkPredictor):
    """The IMF model (module docstring). ``score_outputs`` gives one ``(B, N)`` logit matrix per modality,
    one for the fused embedding (named after the fusion: "tucker", "concat" or "mutan") and "decision".

    Args:
        num_entities: ``N``.
        num_relations: original relations; tables hold ``2 * num_relations`` rows (inverses included).
        config: :class:`IMFConfig`.
        features: modality name -> :class:`~imf_kg.data.kg.EntityFeatures` or ``(values (N, d_m), mask (N,))``.
        structure_vectors: ``(N, d_s)`` pre-trained structure vectors (e.g. GAT), for ``structure="pretrained"``.
    """

    def __init__(self, num_entities: int, num_relations: int, config: IMFConfig | None = None,
                 features: Mapping[str, object] | None = None, structure_vectors: torch.Tensor | None = None):
        super().__init__()
        self.config = config = config or IMFConfig()
        self.num_entities, self.num_relations = int(num_entities), int(num_relations)
        d, d_r, relation_rows = config.entity_dim, config.relation_dim, 2 * self.num_relations
        self.modalities = list(config.modalities)
        self.entity_embeddings = nn.ModuleDict()
        for name in self.modalities:
            self.entity_embeddings[name] = self._build_modality(name, features or {}, structure_vectors)
        self.relation_embeddings = nn.ModuleDict({name: nn.Embedding(relation_rows, d_r) for name in self.modalities})
        self.fused_name = config.fusion if len(self.modalities) > 1 else None
        self.entity_fusion = self.relation_fusion = self.fused_relation_embeddings = None
        if self.fused_name:
            self.entity_fusion = build_fusion(config.fusion, [d] * len(self.modalities), d, config.fusion_rank,
                                              config.fusion_latent_dim, config.fusion_dropout)
            if config.relation_fusion == "fuse":
                self.relation_fusion = build_fusion(config.fusion, [d_r] * len(self.modalities), d_r,
                                                    config.fusion_rank, config.fusion_latent_dim,
                                                    config.fusion_dropout)
            else:
                self.fused_relation_embeddings = nn.Embedding(relation_rows, d_r)
        self.branches = self.modalities + ([self.fused_name] if self.fused_name else [])
        self.scorers = nn.ModuleDict({
            name: ContextualRelationScorer(d, d_r, config.scorer_dropouts, config.batch_norm, config.core_init)
            for name in self.branches
        })
        self.decision = (DecisionFusion(self.branches, relation_rows, config.decision, config.decision_per_relation)
                         if len(self.branches) > 1 else None)
        for table in list(self.relation_embeddings.values()) + [self.fused_relation_embeddings]:
            if table is not None:
                nn.init.xavier_normal_(table.weight)
        self._candidate_cache: dict[str, torch.Tensor] | None = None
        self._relation_matrix_cache: dict[str, torch.Tensor] | None = None
        #: per-branch budget for the ``(2R, d, d)`` matrices cached by :meth:`prepare_evaluation` (0: never cache)
        self.relation_matrix_cache_bytes = RELATION_MATRIX_CACHE_BYTES

    @classmethod
    def from_kg(cls, kg, config: IMFConfig | None = None, structure_vectors: torch.Tensor | None = None) -> "IMF":
        """Build for a :class:`~imf_kg.data.kg.KnowledgeGraph`, reading ``kg.features[m]`` for each modality."""
        return cls(kg.num_entities, kg.num_relations, config, dict(kg.features), structure_vectors)

    def _build_modality(self, name: str, features: Mapping[str, object], structure_vectors) -> nn.Module:
        config = self.config
        if name == STRUCTURE and config.structure == "learned":
            return LearnedEntityTable(self.num_entities, config.entity_dim)
        if name == STRUCTURE:
            if structure_vectors is None:
                raise ConfigError("IMF config: structure='pretrained' needs structure_vectors (N, d_s)")
            values = torch.as_tensor(structure_vectors)
            mask = torch.ones(values.shape[0], dtype=torch.bool)
        else:
            if name not in features:
                raise ConfigError(f"IMF config: modality {name!r} has no features; available: {sorted(features)}")
            entry = features[name]
            values, mask = (entry.values, entry.mask) if hasattr(entry, "values") else entry
        if values.shape[0] != self.num_entities:
            raise ConfigError(f"modality {name!r}: {values.shape[0]} rows; expected one per entity "
                              f"({self.num_entities})")
        return FeatureModalityEmbedding(values, mask, config.entity_dim, trainable=not config.freeze_features,
                                        missing=config.missing, project=config.project_features,
                                        normalize=config.normalize_features, name=name)

    # --------------------------------------------------------------------------------------- candidates
    def candidate_embeddings(self) -> dict[str, torch.Tensor]:
        """Every entity's embedding per branch: modality name / fused name -> ``(N, d)``.

        Uses the cache of :meth:`prepare_evaluation` in eval mode; otherwise computes each once (one call per
        training batch): modality embeddings in one go, the fused ones in slices of ``candidate_chunk_size``.
        """
        if self._candidate_cache is not None and not self.training:
            return self._candidate_cache
        out = {name: self.entity_embeddings[name]() for name in self.modalities}
        if self.fused_name:
            step = self.config.candidate_chunk_size
            inputs = self._fusion_inputs([out[m] for m in self.modalities])
            parts = [self.entity_fusion([x[start:start + step] for x in inputs])
                     for start in range(0, self.num_entities, step)]
            out[self.fused_name] = torch.cat(parts, dim=0)
        return out

    def _fusion_inputs(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        return [e.detach() for e in embeddings] if self.config.detach_fusion_inputs else embeddings

    def _fused_relations(self, relation_ids: torch.Tensor) -> torch.Tensor:
        if self.relation_fusion is not None:
            tables = [self.relation_embeddings[m](relation_ids) for m in self.modalities]
            return self.relation_fusion(self._fusion_inputs(tables))
        return self.fused_relation_embeddings(relation_ids)

    def _all_relation_vectors(self, name: str) -> torch.Tensor:
        """Every relation's embedding (inverses included) of branch ``name``: ``(2R, d_r)``."""
        if name != self.fused_name:
            return self.relation_embeddings[name].weight
        return self._fused_relations(torch.arange(2 * self.num_relations, device=self.scorers[name].core.device))

    def _cached_matrices(self) -> dict[str, torch.Tensor] | None:
        return self._relation_matrix_cache if not self.training else None

    def _scores(self, heads: torch.Tensor, relations: torch.Tensor):
        candidates = self.candidate_embeddings()
        matrices = self._cached_matrices()
        if matrices is None:
            unique, index = distinct_relations(relations)
        scores = {}
        for name in self.branches:
            query = _query_rows(candidates[name], heads)
            scorer = self.scorers[name]
            if matrices is not None:  # evaluation: M_r of every relation contracted once in prepare_evaluation
                context = scorer.contextualize_with_matrices(query, matrices[name], relations)
                scores[name] = scorer.score_candidates(context, candidates[name])
                continue
            relation_vectors = (self._fused_relations(unique) if name == self.fused_name
                                else self.relation_embeddings[name](unique))
            scores[name] = scorer(query, relation_vectors, candidates[name], index)
        scores[DECISION] = self.decision(scores, relations) if self.decision else scores[self.branches[0]]
        return scores, candidates

    # ------------------------------------------------------------------------------------ LinkPredictor
    def score_outputs(self, heads: torch.Tensor, relations: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``(B, N)`` per modality, for the fused embedding, and "decision" (second stage)."""
        return self._scores(heads, relations)[0]

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Decision-fused logits ``(B, N)``."""
        return self._scores(heads, relations)[0][DECISION]

    def loss(self, heads: torch.Tensor, relations: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Algorithm 1: sum of per-branch BCE-with-logits (or softmax CE, ``loss``), + the same of the decision
        output (``joint_loss``),
        + ``contrastive_weight`` * contrastive loss over the distinct query entities.

        Args:
            heads, relations: ``(B,)`` long; targets: ``(B, N)`` (smoothed) labels in [0, 1].

        Returns:
            ``(loss, logs)``; logs has ``loss``, ``bce_<branch>``, ``bce_decision`` and ``contrastive``.
        """
        scores, candidates = self._scores(heads, relations)
        targets = targets.float()
        if self.config.loss == "bce":
            prefix, loss_fn = "bce", bce_with_logits
        else:  # the label rows normalised once for every output, not once per output
            prefix, targets = "ce", label_distribution(targets)
            loss_fn = functools.partial(softmax_cross_entropy, normalized=True)
        terms = {f"{prefix}_{name}": loss_fn(scores[name].float(), targets) for name in self.branches}
        total = sum(terms.values())
        if self.decision is not None and self.config.joint_loss:
            terms[f"{prefix}_decision"] = loss_fn(scores[DECISION].float(), targets)
            total = total + terms[f"{prefix}_decision"]
        if self.fused_name and self.config.contrastive_weight > 0:
            terms["contrastive"] = self.contrastive_loss(heads, candidates)
            total = total + self.config.contrastive_weight * terms["contrastive"]
        names = ["loss", *terms]
        values = torch.stack([total.detach(), *(t.detach() for t in terms.values())]).tolist()  # one sync
        return total, dict(zip(names, values))

    def contrastive_loss(self, heads: torch.Tensor, candidates: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The fusion regulariser over the distinct entities of ``heads``: InfoNCE on their representations inside
        the fusion module (``(U, K)`` per modality), or the reference function on their modality embeddings."""
        candidates = candidates if candidates is not None else self.candidate_embeddings()
        entities = torch.unique(heads)
        views = [candidates[m].index_select(0, entities) for m in self.modalities]
        if self.config.contrastive == "reference":
            return reference_contrastive_loss(views)
        views = self.entity_fusion.modality_representations(self._fusion_inputs(views))
        masks = [getattr(self.entity_embeddings[m], "mask", None) for m in self.modalities]
        masks = [None if mask is None else mask.index_select(0, entities) for mask in masks]
        return info_nce(views, self.config.temperature, masks)

    def flops(self, batch: int, num_unique_relations: int, cached_candidates: bool = False) -> int:
        """Matrix-product FLOPs of one :meth:`score_outputs` call (2 per multiply-add, as FlopCounterMode counts).

        Sums the candidate computation (feature projections ``2 N d_m d`` and fusion of all ``N`` entities;
        skipped when ``cached_candidates``), the relation fusion of the ``U`` distinct relations, and every
        branch's scorer in the order it would choose now (train/eval mode matters, see the scorer). With
        ``cached_candidates`` after :meth:`prepare_evaluation` has also cached the relations' context matrices,
        the relation fusion and contraction are skipped too (the scorer's "precomputed" cost).
        """
        n, total = self.num_entities, 0
        if not cached_candidates:
            total += self._candidate_flops()
        cached_matrices = cached_candidates and self._cached_matrices() is not None
        if self.relation_fusion is not None and not cached_matrices:
            total += num_unique_relations * self.relation_fusion.flops_per_row()
        for name in self.branches:
            scorer = self.scorers[name]
            order = "precomputed" if cached_matrices else scorer.choose_order(batch, num_unique_relations)
            total += scorer.flops(batch, num_unique_relations, n)[order]
        return total

    def _candidate_flops(self) -> int:
        total = 0
        for name in self.modalities:
            embedding = self.entity_embeddings[name]
            projection = getattr(embedding, "projection", None)
            if projection is not None:  # every row, plus the learned missing vector when some row lacks it
                rows = self.num_entities + int(embedding.learned_missing and embedding.missing_rows.numel() > 0)
                total += 2 * rows * projection.in_features * projection.out_features
        if self.entity_fusion is not None:
            total += self.num_entities * self.entity_fusion.flops_per_row()
        return total

    def prepare_evaluation_flops(self, cache_relation_matrices: bool | None = None) -> int:
        """Matrix-product FLOPs of :meth:`prepare_evaluation`: candidates, and every relation's matrices when cached
        (by default: when they fit ``relation_matrix_cache_bytes``)."""
        total = self._candidate_flops()
        if cache_relation_matrices is None:
            cache_relation_matrices = self._relation_matrices_fit()
        if cache_relation_matrices:
            rows = 2 * self.num_relations
            if self.relation_fusion is not None:
                total += rows * self.relation_fusion.flops_per_row()
            for name in self.branches:
                scorer = self.scorers[name]
                total += 2 * rows * scorer.relation_dim * scorer.entity_dim ** 2
        return total

    def _relation_matrices_fit(self) -> bool:
        size = 2 * self.num_relations * self.config.entity_dim ** 2 * next(self.parameters()).element_size()
        return size <= self.relation_matrix_cache_bytes

    def prepare_evaluation(self) -> None:
        """Eval mode, and once per pass: every entity's branch embeddings (fused in slices) and, if they fit
        ``relation_matrix_cache_bytes`` per branch, every relation's context matrix ``(2R, d, d)``."""
        self.eval()
        self._candidate_cache = self._relation_matrix_cache = None
        with torch.no_grad():
            self._candidate_cache = {k: v.detach() for k, v in self.candidate_embeddings().items()}
            if self._relation_matrices_fit():
                self._relation_matrix_cache = {
                    name: self.scorers[name].context_matrices(self._all_relation_vectors(name)).detach()
                    for name in self.branches
                }

    def end_evaluation(self) -> None:
        self._candidate_cache = self._relation_matrix_cache = None

    def train(self, mode: bool = True) -> "IMF":
        if mode:  # parameters are about to change: the cached candidates and matrices would be stale
            self._candidate_cache = self._relation_matrix_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._candidate_cache = self._relation_matrix_cache = None  # moved or cast: recompute on the new device
        return super()._apply(fn, *args, **kwargs)


def _query_rows(candidates: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """``candidates[heads]`` ``(B, d)``; in training a sparse-gradient lookup, whose ``B`` rows are added into the
    dense ``(N, d)`` scoring gradient (``index_select`` builds and adds a zero-filled ``(N, d)`` one)."""
    if candidates.requires_grad and torch.is_grad_enabled():
        return F.embedding(heads, candidates, sparse=True)
    return candidates.index_select(0, heads)
