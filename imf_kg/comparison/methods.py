"""The fusion methods that ``imf-kg compare`` sets side by side, each built from IMF's own components.

Every method is an :class:`~imf_kg.models.imf.IMF` (or a subclass removing parts of it) with the experiment
config's sizes, dropouts and scorer; only the modalities and the fusion stages differ:

    structure / text / image   one modality, one TuckER-form contextual scorer (IMF with ``modalities=[m]``)
    concat                     early fusion: e^f = W [e^1; ...; e^M] + b, ONE scorer on e^f, no per-modality
                               scorers (output "concat")
    late                       late fusion: one scorer per modality, s = logit(mean_m sigmoid(s^m)) with fixed
                               uniform weights (IMF Sec. 3.5 with w_m = 1/M), no fused branch (output "decision")
    tucker                     IMF's first stage alone: Tucker fusion (IMF Eq. 1) + its scorer (output "tucker")
    tucker+decision            full IMF: per-modality scorers + Tucker branch + learned decision fusion
                               (Algorithm 1; output "decision")

Choices, and why:

* ``concat`` and ``tucker`` have no per-modality scorer, so nothing else trains the modality embeddings
  (the structure table, the feature projections): their fusion reads the embeddings *with* gradients
  (``detach_fusion_inputs=False``), i.e. ordinary end-to-end early fusion. Full IMF keeps the config's
  setting (its per-modality scorers train the embeddings). Both keep the config's contrastive term, so the
  two fused-only methods differ only in the fusion operator.
* ``late`` trains each modality's scorer on its own BCE (no joint loss; with fixed uniform weights the
  decision has nothing to learn), then averages the probabilities: classic late fusion.
* IMF itself has no switch for "fused branch only" or "no fused branch", and imf_kg/models/imf.py belongs to
  another part of the toolkit, so :class:`FusedBranchOnly` and :class:`LateFusion` subclass IMF and remove
  the unused scorers/modules after IMF builds them; IMF's forward pass (``_scores``) already iterates over
  ``self.branches`` and skips the decision when there is none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from imf_kg.decision import DecisionFusion
from imf_kg.errors import ConfigError
from imf_kg.models.imf import DECISION, IMF, STRUCTURE, IMFConfig

SINGLE_MODALITY_METHODS = ("structure", "text", "image")
FUSION_METHODS = ("concat", "late", "tucker", "tucker+decision")
METHODS = SINGLE_MODALITY_METHODS + FUSION_METHODS
BASELINE_PREFIX = "pykeen:"


class FusedBranchOnly(IMF):
    """IMF's first-stage fusion and the fused embedding's scorer, nothing else (``concat`` and ``tucker``).

    ``score_outputs`` gives ``{fusion name: (B, N), "decision": the same}``; the loss is the fused branch's
    BCE (+ the config's contrastive term on the fusion's modality representations).
    """

    def __init__(self, num_entities: int, num_relations: int, config: IMFConfig, features=None,
                 structure_vectors=None):
        if len(config.modalities) < 2:
            raise ConfigError(f"a fused branch needs at least two modalities; got {list(config.modalities)}")
        super().__init__(num_entities, num_relations, config, features, structure_vectors)
        for name in self.modalities:
            del self.scorers[name]
        if self.relation_fusion is None:
            # the fused scorer has its own relation table, so the per-modality tables are unused; IMF still reads
            # them (e.g. for the device), so they stay, frozen: no optimiser state, not counted as trained
            self.relation_embeddings.requires_grad_(False)
        self.branches = [self.fused_name]
        self.decision = None


class LateFusion(IMF):
    """One scorer per modality and a fixed uniform average of their probabilities, no fused branch (``late``).

    ``score_outputs`` gives ``{modality: (B, N) for each modality, "decision": logit(mean_m sigmoid(s^m))}``.
    """

    def __init__(self, num_entities: int, num_relations: int, config: IMFConfig, features=None,
                 structure_vectors=None):
        if len(config.modalities) < 2:
            raise ConfigError(f"late fusion needs at least two modalities; got {list(config.modalities)}")
        super().__init__(num_entities, num_relations, config, features, structure_vectors)
        del self.scorers[self.fused_name]
        self.fused_name = None
        self.entity_fusion = self.relation_fusion = self.fused_relation_embeddings = None
        self.branches = list(self.modalities)
        self.decision = DecisionFusion(self.branches, 2 * self.num_relations, mode="uniform")


@dataclass(frozen=True)
class MethodSpec:
    """How one method is built: its model class, its IMF config and the output reported in the table."""

    name: str
    model_class: Callable[..., IMF]
    config: IMFConfig
    output: str


def parse_methods(text: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """``"structure,tucker,pykeen:TuckER"`` -> ``(methods, baselines)``; unknown names raise one ConfigError.

    Baselines keep their PyKEEN spelling (``TuckER``); whether PyKEEN knows the model is checked when it is built.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n and n.strip()]
    methods, baselines = [], []
    for name in names:
        if name.lower().startswith(BASELINE_PREFIX):
            model = name[len(BASELINE_PREFIX):]
            if not model:
                raise ConfigError(f"baseline {name!r}: expected pykeen:<model>, e.g. pykeen:TuckER")
            baselines.append(model)
        elif name in METHODS:
            methods.append(name)
        else:
            raise ConfigError(f"unknown method {name!r}; expected some of {', '.join(METHODS)} "
                              f"or {BASELINE_PREFIX}<PyKEEN model>")
    for kind, chosen in (("method", methods), ("baseline", [b.lower() for b in baselines])):
        repeated = sorted({n for n in chosen if chosen.count(n) > 1})
        if repeated:
            raise ConfigError(f"{kind}(s) {repeated} named twice; expected each once")
    return methods, baselines


def needed_modalities(methods: Sequence[str], fusion_modalities: Sequence[str]) -> list[str]:
    """The modalities the data must provide for ``methods``, in a stable order."""
    wanted = list(fusion_modalities) if any(m in FUSION_METHODS for m in methods) else []
    wanted += [m for m in methods if m in SINGLE_MODALITY_METHODS]
    return list(dict.fromkeys(wanted))


def method_spec(method: str, base: IMFConfig, available: Sequence[str]) -> MethodSpec | str:
    """The :class:`MethodSpec` of ``method`` from the experiment's IMF config ``base``, or, when the data lacks
    what it needs, the reason it is skipped (a string).

    Args:
        available: the modalities the loaded data provides (``structure`` always), in the config's order.
    """
    if method in SINGLE_MODALITY_METHODS:
        if method not in available:
            return f"skipped: the data has no {method!r} modality (available: {', '.join(available)})"
        return MethodSpec(method, IMF, _replace(base, modalities=(method,)), method)
    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown method {method!r}; expected some of {', '.join(METHODS)}")
    fused = [m for m in base.modalities if m in available]
    if len(fused) < 2:
        return (f"skipped: fusion needs two modalities among model.modalities {list(base.modalities)}, "
                f"the data provides {', '.join(fused) or 'none'}")
    if method == "concat":
        config = _replace(base, modalities=tuple(fused), fusion="concat", detach_fusion_inputs=False)
        return MethodSpec(method, FusedBranchOnly, config, "concat")
    if method == "tucker":
        config = _replace(base, modalities=tuple(fused), fusion="tucker", detach_fusion_inputs=False)
        return MethodSpec(method, FusedBranchOnly, config, "tucker")
    if method == "late":
        config = _replace(base, modalities=tuple(fused), decision="uniform", decision_per_relation=False,
                          joint_loss=False)
        return MethodSpec(method, LateFusion, config, DECISION)
    config = _replace(base, modalities=tuple(fused), fusion="tucker", decision="learned")
    return MethodSpec(method, IMF, config, DECISION)


def build_method_model(spec: MethodSpec, kg, structure_vectors: torch.Tensor | None = None) -> IMF:
    """The untrained model of ``spec`` for the knowledge graph ``kg`` (features from ``kg.features``)."""
    return spec.model_class(kg.num_entities, kg.num_relations, spec.config, dict(kg.features), structure_vectors)


def available_modalities(kg, wanted: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Which of ``wanted`` the loaded ``kg`` provides: ``(available, reasons)``; a modality is absent when
    ``kg.features`` lacks it or no entity has it (an all-False mask)."""
    available, reasons = [], {}
    for name in wanted:
        if name == STRUCTURE:
            available.append(name)
        elif name not in kg.features:
            reasons[name] = "not in the data"
        elif not bool(torch.as_tensor(kg.features[name].mask).any()):
            reasons[name] = "no entity has it"
        else:
            available.append(name)
    return available, reasons


def data_can_provide(data_config, modality: str) -> bool:
    """Whether the experiment's data section names a source for ``modality`` (before loading anything)."""
    if modality == STRUCTURE:
        return True
    if modality in data_config.features:
        return True
    if modality == "text":
        return data_config.text is not None
    if modality == "image":
        return bool(data_config.images)
    return False


def _replace(config: IMFConfig, **changes) -> IMFConfig:
    """``dataclasses.replace`` that drops switches this IMF version does not have (keeps working while the
    model's options evolve) and re-validates the result."""
    known = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if k in known})


def describe_methods() -> Mapping[str, str]:
    """One line per method, for ``--help``."""
    return {
        "structure/text/image": "one modality, TuckER-form scorer",
        "concat": "early fusion (concatenate + project), one scorer on the fused embedding",
        "late": "one scorer per modality, uniform average of probabilities",
        "tucker": "Tucker fusion branch alone",
        "tucker+decision": "full IMF (per-modality + Tucker branch, learned decision fusion)",
    }
