"""Every setting of the IMF model (:class:`IMFConfig`), with the "paper" defaults and the "reference" variant."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

from imf_kg.decision import MODES as DECISION_MODES
from imf_kg.errors import ConfigError
from imf_kg.fusion import FUSIONS

STRUCTURE = "structure"
DECISION = "decision"
#: Default memory budget per branch for the context matrices of all relations cached by prepare_evaluation.
RELATION_MATRIX_CACHE_BYTES = 256 * 2**20
VARIANTS = ("paper", "reference")
_REFERENCE = dict(
    fusion="mutan", fusion_rank=2, fusion_latent_dim=None, fusion_dropout=0.2, relation_fusion="fuse",
    core_init="xavier", freeze_features=False, project_features=False, missing="mean", decision="uniform",
    decision_per_relation=False, joint_loss=False, contrastive="reference", contrastive_weight=0.0,
    detach_fusion_inputs=False,
)
_CHOICES = dict(
    variant=VARIANTS, fusion=tuple(FUSIONS), relation_fusion=("table", "fuse"), core_init=("tucker", "xavier"),
    structure=("learned", "pretrained"), missing=("learned", "mean"), decision=DECISION_MODES,
    contrastive=("info_nce", "reference"), loss=("bce", "softmax"),
)


@dataclass
class IMFConfig:
    """Every setting of :class:`IMF`; the defaults are the "paper" variant.

    Attributes:
        modalities: entity modalities, in order; "structure" is the KG structure, any other name is a key of
            the ``features`` given to :class:`IMF` (``kg.features``). One modality gives a plain TuckER model.
        entity_dim / relation_dim: ``d`` and ``d_r``.
        variant: "paper" or "reference" (a label; :meth:`for_variant` sets the switches).
        fusion: "tucker" (paper), "concat" (early-fusion ablation) or "mutan" (published code).
        fusion_rank: Tucker: CP rank of the core (unified-space size); MUTAN: number of product terms.
        fusion_latent_dim: Tucker factor size ``L`` (None: identity factors).
        fusion_dropout: dropout on the fusion inputs.
        relation_fusion: "table" (own learned table for the fused scorer) or "fuse" (fuse the per-modality
            relation tables with a second fusion module, as the published code).
        scorer_dropouts, batch_norm, core_init: of every :class:`ContextualRelationScorer`.
        structure: "learned" (free table; no GAT pre-training) or "pretrained" (frozen vectors given to IMF).
        freeze_features: feature matrices (and pretrained structure vectors) are fixed (paper) or trainable.
        project_features: a trainable linear map from each feature size to ``entity_dim`` (paper); False uses
            the features as embeddings and needs their size to be ``entity_dim`` (the reference pools to 256).
        missing: "learned" missing-modality vector, or "mean" of the present rows (published preprocessing).
        normalize_features: L2-normalise the feature rows first (the published code does).
        decision / decision_per_relation: see :class:`DecisionFusion`.
        joint_loss: add the BCE of the decision-fused prediction (Algorithm 1, line 14).
        loss: "bce" (the paper's 1-N binary cross-entropy) or "softmax" (1-N softmax cross-entropy,
            :mod:`imf_kg.scorers.softmax_ce`: no all-negative phase on large graphs; a stated departure).
        detach_fusion_inputs: the fusion reads the modality embeddings without training them (paper: frozen
            encoders); False lets the fused branch train them too (published code).
        contrastive / contrastive_weight / temperature: the fusion regulariser and its weight (the paper gives
            no weight; 0 switches it off). "info_nce" applies to the modalities' representations inside the
            fusion; "reference" (the published code's function) to the modality embeddings.
        candidate_chunk_size: rows fused at once when computing all entities' fused embeddings.
    """

    modalities: tuple[str, ...] = (STRUCTURE, "text", "image")
    entity_dim: int = 256
    relation_dim: int = 256
    variant: str = "paper"
    fusion: str = "tucker"
    fusion_rank: int = 512
    fusion_latent_dim: int | None = None
    fusion_dropout: float = 0.2
    relation_fusion: str = "table"
    scorer_dropouts: tuple[float, float, float] = (0.3, 0.4, 0.5)
    batch_norm: bool = True
    core_init: str = "tucker"
    structure: str = "learned"
    freeze_features: bool = True
    project_features: bool = True
    missing: str = "learned"
    normalize_features: bool = True
    decision: str = "learned"
    decision_per_relation: bool = False
    joint_loss: bool = True
    loss: str = "bce"
    detach_fusion_inputs: bool = True
    contrastive: str = "info_nce"
    contrastive_weight: float = 0.1
    temperature: float = 0.1
    candidate_chunk_size: int = 4096

    def __post_init__(self):
        self.modalities = tuple(self.modalities)
        self.scorer_dropouts = tuple(float(p) for p in self.scorer_dropouts)
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"IMF config: {key}={getattr(self, key)!r}; expected one of {list(allowed)}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"IMF config: modalities={list(self.modalities)}; expected distinct names")
        reserved = {DECISION, *FUSIONS} & set(self.modalities)
        if reserved:
            raise ConfigError(f"IMF config: modality names {sorted(reserved)} are reserved for output names")
        if len(self.scorer_dropouts) != 3:
            raise ConfigError(f"IMF config: scorer_dropouts={self.scorer_dropouts}; expected 3 probabilities")
        for key in ("entity_dim", "relation_dim", "fusion_rank", "candidate_chunk_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"IMF config: {key}={getattr(self, key)}; expected a positive integer")
        if self.contrastive_weight < 0 or self.temperature <= 0:
            raise ConfigError("IMF config: expected contrastive_weight >= 0 and temperature > 0")

    @classmethod
    def for_variant(cls, variant: str = "paper", **overrides) -> "IMFConfig":
        """The "paper" defaults or the "reference" (published code) settings, then ``overrides``."""
        if variant not in VARIANTS:
            raise ConfigError(f"IMF config: variant={variant!r}; expected one of {list(VARIANTS)}")
        settings = dict(_REFERENCE) if variant == "reference" else {}
        settings.update(overrides, variant=variant)
        return cls.from_dict(settings)

    @classmethod
    def from_dict(cls, values: Mapping) -> "IMFConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"IMF config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["modalities"], out["scorer_dropouts"] = list(self.modalities), list(self.scorer_dropouts)
        return out
