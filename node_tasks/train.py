"""Training node classifiers with the shared :class:`imf_kg.training.Trainer`.

:class:`NodeClassificationTask` implements the ``TrainingTask`` protocol, full-batch (the published code's
protocol, spec 5) or mini-batch through neighbour sampling; the best epoch is chosen on validation
Macro-F1 and the test split is evaluated once, on that checkpoint. :func:`run_seeds` repeats this over
seeds and returns one record per run (mean +- std come from :mod:`imf_kg.reporting`).
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from sklearn.metrics import f1_score
from torch import nn

from imf_kg.errors import ConfigError
from imf_kg.reporting import summarise
from imf_kg.training import TrainConfig, Trainer, is_main_process
from imf_kg.training.distributed import get_rank, get_world_size
from imf_kg.training.curves import plot_training_curve
from node_tasks.baselines import FeatureMLP, HGTEarlyFusion, HGTLateFusion
from node_tasks.distributed import RankBatch, full_graph_batches, rank_seed_batches
from node_tasks.losses import LossWeights, NodeClassificationLoss, loss_weights_for
from node_tasks.model import HGNNIMA, NodeOutputs, graph_inputs
from node_tasks.sampling import TorchNeighborSampler, make_neighbor_loader  # noqa: F401 (re-exported)

# Feature matrices with fewer non-zeros than this are fed to the models as sparse CSR (IMDB's keywords: ~0.3%)
SPARSE_BELOW = 0.05
# name -> (builder, fixed keyword arguments); the ima-* names are the poster's ablations (Ablation Study)
MODELS = {
    "ima": ("ima", {}),
    "ima-ref": ("ima", {"variant": "reference"}),
    "ima-softmax": ("ima", {"final_attention": "softmax"}),  # the poster's softmax_j(b * gamma)
    "ima-product": ("ima", {"final_attention": "product"}),  # beta proportional to b * gamma
    "ima-cross": ("ima", {"ablations": ("cross",)}),
    "ima-align": ("ima", {"ablations": ("align",)}),
    "ima-latt": ("ima", {"ablations": ("latt",)}),
    "ima-lind": ("ima", {"ablations": ("lind",)}),
    "hgt-early": ("hgt-early", {}),
    "hgt-late": ("hgt-late", {}),
    "mlp": ("mlp", {}),
}


@dataclass
class ModelConfig:
    """Model sizes and HGNN-IMA options (spec 6: the published IMDB run used hidden 64, 8 heads, 3 layers).

    ``variant``, ``missing_modality``, ``input_projection``, ``gate_dropout`` and ``ablations`` only
    apply to HGNN-IMA; the baselines use ``hidden``, ``heads``, ``layers``, ``dropout`` and ``baseline_norm``.
    """

    name: str = "ima"
    hidden: int = 64
    heads: int = 8
    layers: int = 3
    dropout: float = 0.2
    variant: str = "paper"
    missing_modality: Optional[str] = None
    input_projection: Optional[str] = None
    gate_dropout: Tuple[float, float] = (0.6, 0.5)
    ablations: Tuple[str, ...] = ()
    final_attention: str = "softmax"
    temperature: Optional[float] = None  # factor on g in alpha and gamma; None: the variant's (1 or 100)
    baseline_norm: bool = False  # HGT baselines: LayerNorm after every HGTConv (Hu et al.'s use_norm)


@dataclass
class OptimConfig:
    """AdamW + OneCycle (spec 5: max lr 1e-3, weight decay 5e-3, 5% warm-up).

    ``total_steps``: None = the run's optimiser steps (the cosine decay then ends with the run); the
    published code used 1000 whatever the number of epochs (spec 10.24), so it barely decays.
    ``schedule``: ``"onecycle"`` or ``"constant"``.
    """

    lr: float = 1e-3
    weight_decay: float = 5e-3
    schedule: str = "onecycle"
    pct_start: float = 0.05
    total_steps: Optional[int] = None


@dataclass
class MiniBatchConfig:
    """Neighbour-sampled mini-batches; ``batch_size: null`` trains full-batch (the published protocol)."""

    batch_size: Optional[int] = None
    num_neighbors: Tuple[int, ...] = (10, 10, 10)
    eval_batch_size: Optional[int] = None


@dataclass
class NodeExperimentConfig:
    """One ``node-tasks train`` experiment (the YAML file's sections)."""

    dataset: str = "synthetic"
    data_options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the dataset's loader
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, metric="macro_f1", mode="max",
                                                                   checkpoint_every=100, progress=False))
    mini_batch: MiniBatchConfig = field(default_factory=MiniBatchConfig)
    paper: Dict[str, Any] = field(default_factory=dict)  # the publication and its numbers, for the report only
    notes: List[str] = field(default_factory=list)
    # model name -> settings that model trains with instead of the shared ones, e.g. hyperparameters tuned per
    # model on validation: {hgt-late: {optim: {lr: 0.01}, train: {epochs: 160}}}. See config_for_model.
    per_model: Dict[str, Dict[str, Any]] = field(default_factory=dict)


PER_MODEL_FORBIDDEN = ("dataset", "data_options", "per_model", "paper", "notes")


def config_for_model(config: NodeExperimentConfig, name: Optional[str] = None) -> NodeExperimentConfig:
    """The config model ``name`` (default ``config.model.name``) trains with: the shared settings with its
    ``per_model`` entry applied, checked against the schema like ``--set`` (a wrong key or type is a
    :class:`ConfigError` naming it). The data and the model's name cannot be changed per model: every model of
    a comparison sees the same graph. The result has an empty ``per_model``."""
    from imf_kg.config import config_from_dict, config_to_dict

    name = name or config.model.name
    unknown = sorted(set(config.per_model) - set(MODELS))
    if unknown:
        raise ConfigError(f"per_model names {unknown}; expected model names among {', '.join(MODELS)}")
    settings = config.per_model.get(name) or {}
    base = replace(config, per_model={}, model=replace(config.model, name=name))
    if not isinstance(settings, dict):
        raise ConfigError(f"per_model.{name}: expected a mapping of config sections, found {settings!r}")
    forbidden = [key for key in settings if key in PER_MODEL_FORBIDDEN]
    model_settings = settings.get("model")
    if forbidden or (isinstance(model_settings, dict) and "name" in model_settings):
        raise ConfigError(f"per_model.{name} sets {forbidden or ['model.name']}; the data and the model's name are "
                          f"shared by every model of a comparison")
    data = config_to_dict(base)
    for section, values in settings.items():
        if not isinstance(values, dict):
            raise ConfigError(f"per_model.{name}.{section}: expected a mapping of settings, found {values!r}")
        if isinstance(data.get(section), dict):
            data[section].update(values)  # key by key, as --set section.key=value would
        else:
            data[section] = values  # an unknown section: the schema check below names it
    return config_from_dict(data, NodeExperimentConfig, source=f"per_model.{name}")


def build_model(name: str, data, config: Optional[ModelConfig] = None) -> Tuple[nn.Module, Tuple[str, ...]]:
    """Instantiate a model of :data:`MODELS` for ``data``; returns (model, ablations it implies)."""
    config = config or ModelConfig()
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    kind, fixed = MODELS[name]
    if kind == "ima":
        ablations = tuple(config.ablations) + tuple(fixed.get("ablations", ()))
        model = HGNNIMA.from_data(
            data, hidden=config.hidden, heads=config.heads, layers=config.layers,
            variant=fixed.get("variant", config.variant), ablations=ablations,
            missing_modality=config.missing_modality, input_projection=config.input_projection,
            dropout=config.dropout, gate_dropout=tuple(config.gate_dropout),
            final_attention=fixed.get("final_attention", config.final_attention),
            temperature=config.temperature)
        return model, model.ablations
    graph_kwargs = dict(hidden=config.hidden, heads=config.heads, layers=config.layers, dropout=config.dropout,
                        use_norm=config.baseline_norm)
    if kind == "hgt-early":
        return HGTEarlyFusion.from_data(data, **graph_kwargs), ()
    if kind == "hgt-late":
        return HGTLateFusion.from_data(data, **graph_kwargs), ()
    return FeatureMLP.from_data(data, hidden=config.hidden, layers=config.layers, dropout=config.dropout), ()


def f1_scores(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Micro-F1 (= accuracy for single-label) and Macro-F1 of argmax predictions (spec 5, Evaluation)."""
    predicted = logits.argmax(-1).cpu().numpy()
    truth = labels.cpu().numpy()
    return {"micro_f1": float(f1_score(truth, predicted, average="micro")),
            "macro_f1": float(f1_score(truth, predicted, average="macro"))}


class NodeClassificationTask:
    """The ``TrainingTask`` for (transductive) node classification on a HeteroData of the data contract.

    Args:
        data: the graph (``data.target_node_type``, ``y``, ``train/val/test_mask``, ``data.modalities``).
        loss: the objective (:class:`node_tasks.losses.NodeClassificationLoss`).
        batch_size: None for full-batch; else seeds per mini-batch, sampled with ``num_neighbors``
            in-neighbours per edge type and hop (one entry per model layer).
        eval_batch_size: seeds per evaluation mini-batch (default ``batch_size``).
    """

    example_name = "nodes"

    def __init__(self, data, loss: NodeClassificationLoss, batch_size: Optional[int] = None,
                 num_neighbors: Sequence[int] = (10, 10, 10), eval_batch_size: Optional[int] = None):
        self.data, self.loss = data, loss
        self.target = data.target_node_type
        self.batch_size, self.num_neighbors = batch_size, list(num_neighbors)
        self.eval_batch_size = eval_batch_size or batch_size
        store = data[self.target]
        for split in ("train", "val", "test"):
            if not bool(store[f"{split}_mask"].any()):
                raise ConfigError(f"the {split} split of {self.target!r} is empty")
        self._device_data = None
        self._device_inputs = None

    # ---- TrainingTask protocol
    def train_batches(self, epoch: int, generator: torch.Generator):
        world_size = get_world_size()
        if world_size > 1:  # data-parallel (node_tasks.distributed): this rank's part of each global batch
            train_mask = self.data[self.target].train_mask
            if self.batch_size is None:
                return full_graph_batches(int(train_mask.sum()), world_size)
            train_nodes = train_mask.nonzero().view(-1)
            # one loader (and one sampler, whose set-up converts the whole graph) per epoch, not per batch
            loader = make_neighbor_loader(self.data, train_nodes, self.num_neighbors, self.batch_size, shuffle=False)

            def sample(seeds: torch.Tensor):
                batch = loader.collate_fn(torch.searchsorted(train_nodes, seeds))  # positions in input_nodes
                return batch if loader.filter_per_worker else loader.filter_fn(batch)

            return rank_seed_batches(train_nodes, self.batch_size, generator, get_rank(), world_size, sample)
        if self.batch_size is None:
            return [None]  # one full-graph step per epoch
        return make_neighbor_loader(self.data, self.data[self.target].train_mask, self.num_neighbors,
                                    self.batch_size, shuffle=True, generator=generator)

    def training_step(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        if isinstance(batch, RankBatch):  # data-parallel: this rank's part (node_tasks.distributed)
            batch = batch.batch
        graph, seeds = self._graph_and_seeds(model, batch, "train")
        x, edges, masks = self._inputs(graph)
        outputs = model(x, edges, masks, return_attention=self.loss.needs_attention)
        return self.loss(outputs, graph[self.target].y, seeds, edges, masks)

    def validate(self, model: nn.Module) -> Dict[str, float]:
        return self.evaluate(model, "val")

    def shard_batch(self, batch: RankBatch, rank: int, world_size: int) -> Tuple[RankBatch, float]:
        """Under torchrun, :meth:`train_batches` already yields this rank's part with its weight."""
        return batch, batch.weight

    def batch_size_of(self, batch) -> int:
        if isinstance(batch, RankBatch):
            return batch.global_size
        if batch is None:
            return int(self.data[self.target].train_mask.sum())
        return int(batch[self.target].batch_size)

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> Dict[str, float]:
        """Micro/Macro-F1 of ``model`` on ``split`` (``train``/``val``/``test``), in eval mode."""
        was_training = model.training
        model.eval()
        try:
            mask = self.data[self.target][f"{split}_mask"]
            if self.batch_size is None:
                graph, index = self._graph_and_seeds(model, None, split)
                logits = self._forward(model, graph).logits[index]
                labels = graph[self.target].y[index]
            else:
                logits, labels = [], []
                loader = make_neighbor_loader(self.data, mask, self.num_neighbors, self.eval_batch_size,
                                              shuffle=False)
                for batch in loader:
                    graph, seeds = self._graph_and_seeds(model, batch, split)
                    logits.append(self._forward(model, graph).logits[seeds])
                    labels.append(graph[self.target].y[seeds])
                logits, labels = torch.cat(logits), torch.cat(labels)
            return f1_scores(logits.float(), labels)
        finally:
            model.train(was_training)

    def _graph_and_seeds(self, model, batch, split):
        device = _device_of(model)
        if batch is None:
            if self._device_data is None or self._device_data[0] != device:
                self._device_data = (device, self.data.to(device))
                self._device_inputs = None
            graph = self._device_data[1]
            return graph, graph[self.target][f"{split}_mask"]
        graph = batch.to(device)
        return graph, torch.arange(int(batch[self.target].batch_size), device=device)

    def _inputs(self, graph):
        """The model inputs of ``graph``; for the full graph, prepared once (sparse bag-of-words features,
        :func:`node_tasks.model.graph_inputs`) and reused by every epoch."""
        if self._device_data is None or graph is not self._device_data[1]:
            return graph_inputs(graph, sparse_below=SPARSE_BELOW)
        if self._device_inputs is None:
            self._device_inputs = graph_inputs(graph, sparse_below=SPARSE_BELOW)
        return self._device_inputs

    def _forward(self, model, graph) -> NodeOutputs:
        return model(*self._inputs(graph))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def build_optimizer(model: nn.Module, optim: OptimConfig, steps: int):
    """AdamW and its (per optimiser step) scheduler, or None for ``schedule: constant``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.schedule == "constant":
        return optimizer, None
    if optim.schedule != "onecycle":
        raise ConfigError(f"optim.schedule: expected 'onecycle' or 'constant', found {optim.schedule!r}")
    total = optim.total_steps or steps
    if total < steps:
        raise ConfigError(f"optim.total_steps={total} is below the run's {steps} optimiser steps")
    if total < 4:  # too short to warm up and decay
        return optimizer, None
    # OneCycleLR divides by (warm-up steps - 1): keep at least 2 warm-up steps on short runs
    pct_start = min(max(optim.pct_start, 2.0 / total), 0.5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optim.lr, total_steps=total,
                                                    pct_start=pct_start)
    return optimizer, scheduler


class _CurveAtEndTrainer(Trainer):
    """The shared Trainer, but the training-curve PNG is drawn once after ``fit`` instead of after every
    validation: a matplotlib draw (~0.2 s) costs more than an epoch of these small full-batch models.
    ``draw_curve=False`` skips it (compare's throw-away run folders)."""

    def __init__(self, *args, draw_curve: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_curve = draw_curve

    def _log_epoch(self, record, evaluated):
        super()._log_epoch(record, evaluated=False)

    def fit(self, resume: bool = False):
        result = super().fit(resume)
        if self.draw_curve and is_main_process() and result.history:
            plot_training_curve(result.history, self.curve_path, self.config.metric)
        return result


@dataclass
class TrainedModel:
    """A model trained by :func:`train_selected`, restored to the epoch chosen on validation Macro-F1.

    Attributes:
        model: the selected checkpoint (test never evaluated). task: its :class:`NodeClassificationTask`.
        result: the Trainer's result (``best_epoch``, ``best_metrics``, per-epoch ``history`` with
            ``train_loss`` and the validation metrics). seed, seconds: of this run.
    """

    model: nn.Module
    task: "NodeClassificationTask"
    result: Any
    seed: int
    seconds: float


def train_selected(config: NodeExperimentConfig, data, run_dir, seed: Optional[int] = None,
                   draw_curve: bool = True, prepare: Optional[Callable[[nn.Module], None]] = None) -> TrainedModel:
    """Train ``config.model.name`` with the shared Trainer and restore the checkpoint selected on validation
    Macro-F1. Never evaluates the test split (:func:`train_and_test` does, once).

    ``prepare``, if given, is called on the freshly built model before training (diagnostics such as
    ``benchmarks/attention_probe.py --pretrain-match`` start from a modified model this way)."""
    config = config_for_model(config)
    train_config = replace(config.train, seed=config.train.seed if seed is None else seed)
    torch.manual_seed(train_config.seed)  # the model's initial parameters depend on the seed
    model, ablations = build_model(config.model.name, data, config.model)
    if prepare is not None:
        prepare(model)
    loss = NodeClassificationLoss(loss_weights_for(ablations, config.loss))
    batch_size = config.mini_batch.batch_size
    task = NodeClassificationTask(data, loss, batch_size, _fanout(config), config.mini_batch.eval_batch_size)
    steps_per_epoch = 1 if batch_size is None else -(-int(data[data.target_node_type].train_mask.sum()) // batch_size)
    optimizer, scheduler = build_optimizer(model, config.optim, steps_per_epoch * train_config.epochs)
    start = time.perf_counter()
    trainer = _CurveAtEndTrainer(model, task, optimizer, train_config, run_dir, scheduler=scheduler,
                                 step_scheduler="batch", draw_curve=draw_curve)
    result = trainer.fit()
    trainer.load_best()
    return TrainedModel(trainer.model, task, result, train_config.seed, time.perf_counter() - start)


def train_and_test(config: NodeExperimentConfig, data, run_dir, seed: Optional[int] = None,
                   draw_curve: bool = True) -> Dict:
    """Train ``config.model.name`` with the shared Trainer, select on validation Macro-F1, test once.

    Returns one record: method, seed, best epoch, validation and test Micro/Macro-F1, seconds.
    """
    trained = train_selected(config, data, run_dir, seed, draw_curve)
    start = time.perf_counter()
    test = trained.task.evaluate(trained.model, "test")  # once, on the checkpoint chosen on validation
    result = trained.result
    return {
        "method": config.model.name, "seed": trained.seed, "best_epoch": result.best_epoch,
        **{f"val_{k}": v for k, v in result.best_metrics.items()}, **test,
        "seconds": trained.seconds + time.perf_counter() - start, **_cost(result.history, trained.model),
    }


def _cost(history: List[Dict], model: nn.Module) -> Dict[str, float]:
    """epoch_s: median over epochs of training + validation seconds; peak_rss_mb: the process's peak resident
    memory so far (monotone across the runs of one process); peak_cuda_mb where the model is on a GPU."""
    epochs = sorted(r.get("train_time_s", 0.0) + r.get("valid_time_s", 0.0) for r in history)
    cost = {"epoch_s": epochs[len(epochs) // 2] if epochs else math.nan,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    device = _device_of(model)
    if device.type == "cuda":
        cost["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        torch.cuda.reset_peak_memory_stats(device)
    return cost


def _fanout(config: NodeExperimentConfig) -> List[int]:
    """One neighbour count per hop = per model layer (the last entry repeats; empty means all neighbours)."""
    hops, fanout = config.model.layers, list(config.mini_batch.num_neighbors)
    return (fanout + fanout[-1:] * hops)[:hops] if fanout else [-1] * hops


@dataclass
class SeedResults:
    """The runs of one model over several seeds.

    Attributes:
        records: one :func:`train_and_test` record per seed.
        summary: ``method``, ``n`` and ``<metric>_mean`` / ``<metric>_std`` (sample std) for test
            Micro-F1 and Macro-F1 and the selected validation Macro-F1 (:func:`imf_kg.reporting.summarise`).
    """

    records: List[Dict]
    summary: Dict

    def __str__(self) -> str:
        s = self.summary
        return (f"{s['method']}: Micro-F1 {s['micro_f1_mean']:.4f} ± {s['micro_f1_std']:.4f}, "
                f"Macro-F1 {s['macro_f1_mean']:.4f} ± {s['macro_f1_std']:.4f} over {s['n']} seed(s)")


def run_seeds(model_name: str, data, seeds: Iterable[int], config: Optional[NodeExperimentConfig] = None,
              run_root: Optional[str | Path] = None, on_record=None) -> SeedResults:
    """Train and test ``model_name`` once per seed (see :func:`train_and_test`); mean ± std over seeds.

    Run folders go under ``run_root/<model>/seed<k>`` (a temporary folder when None); ``on_record`` is
    called with each record as soon as its run ends (progress reports).
    """
    config = config or NodeExperimentConfig()
    config = replace(config, model=replace(config.model, name=model_name))
    records = []
    with tempfile.TemporaryDirectory(prefix="node-tasks-") as scratch:
        root = Path(run_root) if run_root is not None else Path(scratch)
        for seed in seeds:
            # a curve nobody keeps (temporary folder) is not drawn: ~1 s a run, a third of a synthetic run
            records.append(train_and_test(config, data, root / model_name / f"seed{seed}", seed=int(seed),
                                          draw_curve=run_root is not None))
            if on_record is not None:
                on_record(records[-1])
    return SeedResults(records, summarise(records, "method", ("micro_f1", "macro_f1", "val_macro_f1"))[0])


def experiment_as_dict(config: NodeExperimentConfig) -> Dict:
    return asdict(config)
