"""1-N link-prediction training (ConvE, Dettmers et al. 2018; TuckER, Balažević et al. 2019).

A training example is a query ``(entity, relation)``, relation ids including inverses, taken once per
distinct pair of the training triples. Its label row marks every tail known for it in train only, and
the model scores all N entities at once against that row with binary cross-entropy.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Mapping

import torch
from torch import nn

from imf_kg.data.kg import SPLITS, KnowledgeGraph
from imf_kg.errors import ConfigError, ToolkitError

logger = logging.getLogger("imf_kg.training")

SMOOTHING_FORMS = ("standard", "tucker")
# output names taken as the primary output of a multi-output model when primary_output is not given
PREFERRED_PRIMARY_OUTPUTS = ("fused", "decision", "ensemble", "model")


class OneToNTask:
    """The 1-N link-prediction task for :class:`~imf_kg.training.Trainer`.

    Labels (TuckER, Balažević et al. 2019, Sec. 5.1; IMF_SPEC.md Sec. 6.2): for a batch of B queries the
    target is a ``(B, N)`` matrix, built on the model's device in one scatter from
    ``kg.train_index.lookup_rows`` (no loop over queries), then smoothed with ε = ``label_smoothing``:

    - ``smoothing_form="standard"``: ``(1 - ε) y + ε / N`` (Szegedy et al. 2016; rows keep their mass);
    - ``smoothing_form="tucker"``: ``(1 - ε) y + 1 / N``, what TuckER's code and the IMF reference code
      use (``0.9 y + 1/N`` for ε = 0.1): positives get ``0.9 + 1/N``, negatives ``1/N``.

    Args:
        kg: the knowledge graph; training queries come from ``kg.train_index``.
        model: optional, checked to score ``kg.num_entities`` candidates; the model actually trained is the
            one the trainer passes to :meth:`training_step`.
        batch_size: queries per batch.
        label_smoothing: ε in ``[0, 1)``.
        eval_split: split used by :meth:`validate` (``"valid"`` for model selection).
        eval_batch_size: queries per evaluation batch.
        device: where labels are built; ``None`` follows the model's parameters at each step.
        smoothing_form: ``"standard"`` or ``"tucker"`` (see above).
        primary_output: for multi-output models, whose metrics are also reported unprefixed (``"mrr"``) next to
            every output's prefixed ones (``"fused/mrr"``); default: the first of
            ``fused, decision, ensemble, model`` present, else the first output.
        shuffle: shuffle the queries each epoch (with the trainer's generator).
        eval_progress: show the evaluation's own progress bar during validation.
    """

    example_name = "queries"

    def __init__(
        self,
        kg: KnowledgeGraph,
        model: nn.Module | None = None,
        batch_size: int = 128,
        label_smoothing: float = 0.1,
        eval_split: str = "valid",
        eval_batch_size: int = 256,
        device: torch.device | str | None = None,
        smoothing_form: str = "standard",
        primary_output: str | None = None,
        shuffle: bool = True,
        eval_progress: bool = False,
    ):
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"batch_size: expected integers >= 1, found {batch_size} and {eval_batch_size}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: expected a number in [0, 1), found {label_smoothing!r}")
        if smoothing_form not in SMOOTHING_FORMS:
            raise ConfigError(f"smoothing_form: expected one of {', '.join(SMOOTHING_FORMS)}, found {smoothing_form!r}")
        if eval_split not in SPLITS:
            raise ConfigError(f"eval_split: expected one of {', '.join(SPLITS)}, found {eval_split!r}")
        model_entities = getattr(model, "num_entities", None)
        if model_entities is not None and int(model_entities) != kg.num_entities:
            raise ConfigError(f"model scores {model_entities} entities but {kg.name} has {kg.num_entities}")
        self.kg = kg
        self.batch_size = int(batch_size)
        self.label_smoothing = float(label_smoothing)
        self.smoothing_form = smoothing_form
        self.eval_split = eval_split
        self.eval_batch_size = int(eval_batch_size)
        self.device = torch.device(device) if device is not None else None
        self.primary_output = primary_output
        self.shuffle = shuffle
        self.eval_progress = eval_progress
        self.index = kg.train_index
        self.queries = self.index.queries()  # (num_queries, 2): entity, relation incl. inverse
        if len(self.queries) == 0:
            raise ToolkitError(f"{kg.name}: no training triples, so there is nothing to train on")

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    def num_batches(self) -> int:
        return math.ceil(self.num_queries / self.batch_size)

    # ---------------------------------------------------------------------------------- TrainingTask
    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Batches of query rows (``(batch,)`` CPU long tensors indexing :attr:`queries`), freshly shuffled."""
        if self.shuffle:
            order = torch.randperm(self.num_queries, generator=generator)
        else:
            order = torch.arange(self.num_queries)
        yield from order.split(self.batch_size)

    def batch_size_of(self, batch: torch.Tensor) -> int:
        return len(batch)

    def training_step(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``model.loss(heads, relations, targets)`` for the queries ``batch`` (targets ``(batch, N)``)."""
        device = self.device or _module_device(model)
        query = self.queries[batch].to(device, non_blocking=True)
        targets = self.targets(batch, device)
        return model.loss(query[:, 0], query[:, 1], targets)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Filtered ranking on ``eval_split``, flattened to ``{"mrr": ..., "hits@10": ..., "fused/mrr": ...}``.

        Under data parallelism each rank ranks a slice of the queries and all ranks get the same metrics.
        """
        from imf_kg.training.distributed import evaluate_link_prediction  # sharded when data-parallel

        result = evaluate_link_prediction(model, self.kg, split=self.eval_split, batch_size=self.eval_batch_size,
                                          progress=False)
        return flatten_link_prediction_metrics(result, primary_output=self.primary_output)

    # ----------------------------------------------------------------------------------------- labels
    def targets(self, query_rows: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Smoothed 1-N labels of the queries at rows ``query_rows``: ``(batch, num_entities)`` float32."""
        batch_index, entity = self.index.lookup_rows(query_rows)
        labels = torch.zeros(len(query_rows), self.kg.num_entities, device=device)
        labels[batch_index.to(device, non_blocking=True), entity.to(device, non_blocking=True)] = 1.0
        return smooth_labels(labels, self.label_smoothing, self.smoothing_form)


def smooth_labels(labels: torch.Tensor, epsilon: float, form: str = "standard") -> torch.Tensor:
    """Label smoothing of a ``(batch, N)`` multi-hot matrix: ``(1-ε) y + ε/N`` or TuckER's ``(1-ε) y + 1/N``."""
    if epsilon == 0.0:
        return labels
    num_entities = labels.shape[-1]
    if form == "standard":
        return labels * (1.0 - epsilon) + epsilon / num_entities
    if form == "tucker":
        return labels * (1.0 - epsilon) + 1.0 / num_entities
    raise ConfigError(f"smoothing_form: expected one of {', '.join(SMOOTHING_FORMS)}, found {form!r}")


def flatten_link_prediction_metrics(
    result: Mapping, primary_output: str | None = None, direction: str = "both", ranking: str = "realistic"
) -> dict[str, float]:
    """Flatten ``evaluate_link_prediction``'s result into ``{metric: value}`` for one direction and rank type.

    ``result`` maps output names to :class:`~imf_kg.evaluation.RankMetrics` (``values[ranking][direction]``);
    plain nested dicts are accepted too, keyed ``[direction][ranking]`` or ``[ranking][direction]``, with or
    without the output-name level. A single output gives unprefixed names (``"mrr"``, ``"hits@10"``). Several
    outputs give ``"<output>/<metric>"`` for each, plus the primary output's metrics unprefixed, so that
    ``metric: mrr`` selects on the primary output.
    """
    if _metrics_of(result, direction, ranking) is not None:
        per_output = {"": _metrics_of(result, direction, ranking)}
    else:
        per_output = {
            str(name): metrics for name, value in result.items()
            if (metrics := _metrics_of(value, direction, ranking)) is not None
        }
    if not per_output:
        raise ToolkitError(
            f"evaluation result has no {ranking!r} metrics for direction {direction!r}; "
            f"found {sorted(map(str, result))}"
        )
    flat: dict[str, float] = {}
    for name, metrics in per_output.items():
        prefix = f"{name}/" if len(per_output) > 1 else ""
        flat.update({prefix + metric: value for metric, value in _numbers(metrics).items()})
    if len(per_output) > 1:
        preferred = next((n for n in PREFERRED_PRIMARY_OUTPUTS if n in per_output), next(iter(per_output)))
        primary = primary_output or preferred
        if primary not in per_output:
            raise ConfigError(f"primary_output: {primary!r} is not an output; expected one of {', '.join(per_output)}")
        flat.update(_numbers(per_output[primary]))
    return flat


def _metrics_of(value, direction: str, ranking: str) -> Mapping | None:
    """The ``{metric: number}`` mapping of one output, whichever of the accepted layouts it has."""
    values = getattr(value, "values", None)
    if isinstance(values, Mapping):  # RankMetrics
        value = values
    if not isinstance(value, Mapping):
        return None
    if isinstance(value.get(ranking), Mapping) and isinstance(value[ranking].get(direction), Mapping):
        return value[ranking][direction]
    if isinstance(value.get(direction), Mapping) and isinstance(value[direction].get(ranking), Mapping):
        return value[direction][ranking]
    return None


def _numbers(metrics: Mapping) -> dict[str, float]:
    return {
        str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _module_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
