"""One IMF experiment, from a YAML config to a run folder: data -> features -> model -> train -> test once.

    config.yaml             the resolved configuration (every default written out)
    checkpoints/            last.pt (resumable) and best.pt (best validation epoch), see imf_kg.training
    metrics.jsonl           per-epoch training and validation metrics; training_curve.png
    results.json            validation metrics of the selected epoch and the test metrics of every output
    summary.md              the same as Markdown tables, with the paper's expected numbers when the config has them
    test_mrr.png            bar chart of test MRR per output

Model selection uses validation only; the test split is evaluated once, on the selected checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from imf_kg.config import config_to_dict, load_config, save_config
from imf_kg.data import KnowledgeGraph, load_kg
from imf_kg.errors import ConfigError, RunDirExistsError, ToolkitError
from imf_kg.io import atomic_write_figure, atomic_write_json, atomic_write_text
from imf_kg.models.imf import IMF, IMFConfig, STRUCTURE
from imf_kg.training import OneToNTask, TrainConfig, Trainer, is_main_process, resolve_device, seed_everything
from imf_kg.training import distributed

STRUCTURE_ONLY = "structure-only"


@dataclass
class DataConfig:
    """Where the KG and its modalities come from.

    Attributes:
        dataset: a PyKEEN dataset name (``nations``, ``umls``, ``kinships``) or a folder (format detected).
        format: force a folder format (``tsv``, ``wn18``, ``openke``, ``imf``).
        unseen: valid/test triples with entities or relations absent from train: ``drop`` or ``error``.
        text: ``null`` (no text), ``names`` (entity labels, underscores as spaces), ``entity_text`` (the
            folder's ``entity_text.tsv`` / WN18 definitions) or a path to an ``id<TAB>text`` file.
        text_model: a local transformers folder or hub name; ``null`` is the packaged all-MiniLM-L6-v2.
        features: modality -> feature matrix file (``.npy``, ``.pt``, reference ``.pkl``).
        feature_ids: modality -> file naming the entity of each matrix row (else rows are in id order).
        images: folder of entity images (one sub-folder or file-name prefix per entity).
        image_weights: local weights of the image backbone (``null``: untrained, for tests only).
        reference_pooling: pool 4096-d image / 768-d text features to 256-d as the published code does.
    """

    dataset: str = "umls"
    format: Optional[str] = None
    unseen: Literal["drop", "error"] = "drop"
    text: Optional[str] = None
    text_model: Optional[str] = None
    text_pooling: Literal["mean", "cls", "pooler"] = "mean"
    text_max_length: int = 128
    features: dict[str, str] = field(default_factory=dict)
    feature_ids: dict[str, str] = field(default_factory=dict)
    images: Optional[str] = None
    image_backbone: str = "vgg16"
    image_weights: Optional[str] = None
    cache_dir: Optional[str] = None
    reference_pooling: bool = False


@dataclass
class StructurePretrainConfig:
    """GAT + TransE pre-training of the structural modality (used when ``model.structure: pretrained``)."""

    epochs: int = 300
    heads: int = 2
    lr: float = 5e-4
    weight_decay: float = 1e-5
    margin: float = 1.0
    batch_size: Optional[int] = None


@dataclass
class OptimConfig:
    """Optimiser and 1-N batching."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    batch_size: int = 128
    eval_batch_size: int = 256
    label_smoothing: float = 0.1
    smoothing_form: Literal["standard", "tucker"] = "standard"


@dataclass
class ExperimentConfig:
    """A whole IMF experiment.

    Attributes:
        name: the experiment's name (reports).
        paper: the paper the settings come from.
        expected: the paper's (or the reference's) numbers for comparison, e.g. ``{mrr: 0.36}``.
        notes: ambiguities and departures, in words.
        structure_only_baseline: also train a structure-only model (same settings and budget, one modality)
            and report it beside IMF's outputs.
    """

    name: str = "imf"
    paper: str = "Li et al., IMF: Interactive Multimodal Fusion Model for Link Prediction, WWW 2023"
    expected: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: IMFConfig = field(default_factory=IMFConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    structure_pretrain: StructurePretrainConfig = field(default_factory=StructurePretrainConfig)
    structure_only_baseline: bool = False


def load_experiment(path: str | Path, overrides=()) -> ExperimentConfig:
    return load_config(path, ExperimentConfig, overrides)


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(cfg: ExperimentConfig, device: torch.device | str = "cpu", progress: bool = True) -> KnowledgeGraph:
    """Load the KG and attach/encode every feature modality the model asks for."""
    data = cfg.data
    kg = load_kg(data.dataset, fmt=data.format, unseen=data.unseen)
    wanted = [m for m in cfg.model.modalities if m != STRUCTURE]
    if "text" in wanted and "text" not in data.features:
        _attach_text(kg, data, device, progress)
    for modality, path in data.features.items():
        from imf_kg.data.side_data import attach_features

        attach_features(kg, modality, path, data.feature_ids.get(modality))
    if "image" in wanted and "image" not in data.features:
        if not data.images:
            raise ConfigError("model.modalities has 'image' but neither data.images nor data.features.image is set")
        from imf_kg.data.side_data import attach_images
        from imf_kg.encoders.image import entity_image_features

        attach_images(kg, data.images)
        entity_image_features(kg, backbone=data.image_backbone, weights_path=data.image_weights,
                              device=device, cache_dir=data.cache_dir, progress=progress)
    missing = [m for m in wanted if m not in kg.features]
    if missing:
        raise ConfigError(f"model.modalities needs {missing} but the data gives only {sorted(kg.features)}; "
                          "set data.text / data.features / data.images")
    if data.reference_pooling:
        from imf_kg.data.kg import EntityFeatures
        from imf_kg.encoders.precomputed import reference_pool

        for name in wanted:
            feats = kg.features[name]
            kg.features[name] = EntityFeatures(reference_pool(feats.values, normalize=True), feats.mask,
                                               feats.source + " (reference pooling)")
    return kg


def _attach_text(kg: KnowledgeGraph, data: DataConfig, device, progress: bool) -> None:
    from imf_kg.encoders.text import entity_text_features

    if data.text is None:
        raise ConfigError("model.modalities has 'text' but data.text is null; use names, entity_text or a file")
    if data.text == "names":
        kg.entity_text = [name.replace("_", " ") for name in kg.entity_names]
    elif data.text == "entity_text":
        if kg.entity_text is None:
            raise ConfigError(f"data.text: entity_text, but {data.dataset} has no entity_text.tsv or definitions")
    else:
        from imf_kg.data.side_data import attach_text

        attach_text(kg, data.text)
    entity_text_features(kg, model=data.text_model, pooling=data.text_pooling, max_length=data.text_max_length,
                         device=device, cache_dir=data.cache_dir, progress=progress)


def pretrained_structure(kg: KnowledgeGraph, cfg: ExperimentConfig, run_dir: Path, device, progress: bool):
    """GAT + TransE structure vectors, cached in the run folder so that ``--resume`` reuses them."""
    path = run_dir / "structure_vectors.pt"
    if path.exists():
        return torch.load(path, map_location="cpu")
    from imf_kg.encoders.structure import train_structure_encoder
    from imf_kg.io import atomic_torch_save

    pre = cfg.structure_pretrain
    entity, _ = train_structure_encoder(
        kg, dim=cfg.model.entity_dim, heads=pre.heads, epochs=pre.epochs, lr=pre.lr,
        weight_decay=pre.weight_decay, margin=pre.margin, batch_size=pre.batch_size, device=device,
        seed=cfg.train.seed, progress=progress,
    )
    atomic_torch_save(path, entity)
    return entity


def build_model(kg: KnowledgeGraph, cfg: ExperimentConfig, structure_vectors=None) -> IMF:
    return IMF.from_kg(kg, cfg.model, structure_vectors=structure_vectors)


def build_optimizer(model: torch.nn.Module, optim: OptimConfig):
    """Adam or AdamW, fused (one vectorised pass over all parameters instead of a loop of small kernels per
    tensor: 22-37% of a structure-only CPU step went to plain Adam, benchmarks/_profile_notes.md), same update."""
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = cls(params, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, optim.lr_decay) if optim.lr_decay != 1.0 else None
    return optimizer, scheduler


def primary_output(model: IMF) -> str:
    """The output selected on: the decision-fused one when there is one, else the single branch."""
    return "decision" if getattr(model, "decision", None) is not None else model.branches[-1]


# ----------------------------------------------------------------------------------------------- run folder
def prepare_run_dir(run_dir: str | Path, overwrite: bool, resume: bool) -> Path:
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").exists():
            raise ToolkitError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
        return run_dir
    return fresh_folder(run_dir, overwrite, "the run folder exists; pass --overwrite to replace it or --resume")


def fresh_folder(folder: str | Path, overwrite: bool, refusal: str) -> Path:
    """An empty ``folder``: a non-empty one is removed only with ``overwrite``, else ``RunDirExistsError``."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise RunDirExistsError(f"{folder}: {refusal}")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train_one(kg, cfg: ExperimentConfig, run_dir: Path, resume: bool, progress: bool, structure_vectors=None):
    """Train one model in ``run_dir``; returns ``(model, TrainResult, seconds)`` with the best weights loaded."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = build_model(kg, cfg, structure_vectors)
    optimizer, scheduler = build_optimizer(model, cfg.optim)
    task = OneToNTask(kg, model, batch_size=cfg.optim.batch_size, label_smoothing=cfg.optim.label_smoothing,
                      eval_split="valid", eval_batch_size=cfg.optim.eval_batch_size,
                      smoothing_form=cfg.optim.smoothing_form, primary_output=primary_output(model))
    train_cfg = dataclasses.replace(cfg.train, progress=progress and cfg.train.progress)
    trainer = Trainer(model, task, optimizer, train_cfg, run_dir, scheduler=scheduler)
    start = time.perf_counter()
    result = trainer.fit(resume=resume)
    seconds = time.perf_counter() - start
    if result.interrupted:
        return model, result, seconds
    trainer.load_best()
    return trainer.model, result, seconds


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, overwrite: bool = False, resume: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Train IMF (and optionally a structure-only baseline), select on validation, evaluate test once.

    Under torchrun every process calls this: rank 0 prepares the run folder and writes every file, rank 0
    encodes features and pre-trains structure first (the others then read its caches), training is
    data-parallel and test evaluation is sharded (:mod:`imf_kg.training.distributed`).
    """
    from imf_kg.training.distributed import evaluate_link_prediction  # sharded when data-parallel

    run_dir = distributed.on_main(prepare_run_dir, run_dir, overwrite, resume)
    if not resume and is_main_process():
        save_config(cfg, run_dir / "config.yaml")
    device = resolve_device(cfg.train.device)
    kg = distributed.main_first(prepare_data, cfg, device=device, progress=progress)
    vectors = (distributed.main_first(pretrained_structure, kg, cfg, run_dir, device, progress)
               if cfg.model.structure == "pretrained" else None)
    model, result, seconds = train_one(kg, cfg, run_dir, resume, progress, vectors)
    if result.interrupted:
        return {"interrupted": True, "last_epoch": result.last_epoch}
    outputs = {}
    test = evaluate_link_prediction(model, kg, split="test", batch_size=cfg.optim.eval_batch_size, progress=progress)
    outputs.update(test)
    runs = {"imf": _run_record(result, seconds)}
    if cfg.structure_only_baseline and len(cfg.model.modalities) > 1:
        base_cfg = structure_only(cfg)
        base_dir = run_dir / STRUCTURE_ONLY
        base_model, base_result, base_seconds = train_one(
            kg, base_cfg, base_dir, resume and (base_dir / "checkpoints" / "last.pt").exists(), progress, vectors)
        base_test = evaluate_link_prediction(base_model, kg, split="test", batch_size=cfg.optim.eval_batch_size,
                                             progress=progress)
        outputs[STRUCTURE_ONLY] = _single(base_test)
        runs[STRUCTURE_ONLY] = _run_record(base_result, base_seconds)
    results = {
        "name": cfg.name,
        "dataset": kg.name,
        "data": kg.summary(),
        "primary_output": primary_output(model),
        "runs": runs,
        "test": {name: metrics.to_dict() for name, metrics in outputs.items()},
        "expected": dict(cfg.expected),
    }
    if is_main_process():
        write_reports(results, outputs, run_dir, cfg)
    return results


def structure_only(cfg: ExperimentConfig) -> ExperimentConfig:
    """The same experiment with the structural modality alone (a TuckER-form model), same budget."""
    model = dataclasses.replace(cfg.model, modalities=(STRUCTURE,))
    return dataclasses.replace(cfg, model=model, structure_only_baseline=False, name=cfg.name + "-" + STRUCTURE_ONLY)


def _single(result: dict):
    return result["model"] if "model" in result else next(iter(result.values()))


def _run_record(result, seconds: float) -> dict:
    return {"best_epoch": result.best_epoch, "best_valid": result.best_metrics, "epochs_run": result.last_epoch,
            "stopped_early": result.stopped_early, "train_seconds": round(seconds, 2)}


def write_reports(results: dict, outputs: dict, run_dir: Path, cfg: ExperimentConfig) -> None:
    from imf_kg.evaluation.metrics import metrics_table

    atomic_write_json(run_dir / "results.json", results)
    table = metrics_table(outputs)
    lines = [f"# {cfg.name} on {results['dataset']}", "", f"Paper: {cfg.paper}", "",
             "Filtered ranking, both directions, realistic rank; selected on validation "
             f"(`{cfg.train.metric}` of output `{results['primary_output']}`); test evaluated once.", "",
             "## Test", "", table, ""]
    for name, run in results["runs"].items():
        lines.append(f"- {name}: best epoch {run['best_epoch']} of {run['epochs_run']}, "
                     f"{run['train_seconds']:.1f} s training, validation {cfg.train.metric} = "
                     f"{run['best_valid'].get(cfg.train.metric, float('nan')):.4f}")
    if cfg.expected:
        lines += ["", "## Expected (from the paper or reference)", "",
                  ", ".join(f"{k} {v}" for k, v in cfg.expected.items())]
    if cfg.notes:
        lines += ["", "## Notes", "", cfg.notes.strip()]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines) + "\n")
    _plot_mrr(outputs, run_dir / "test_mrr.png", results["dataset"])


def _plot_mrr(outputs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(outputs)
    values = [outputs[n].get("mrr", "both", "realistic") for n in names]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.2))
    ax.bar(names, values, color="#4c72b0")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("test MRR (filtered)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def config_dict(cfg: ExperimentConfig) -> dict:
    return config_to_dict(cfg)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", progress: bool = False):
    """Rebuild a trained run: ``(config, kg, model)`` with the best-validation weights loaded, in eval mode."""
    run_dir = Path(run_dir)
    config_path, best_path = run_dir / "config.yaml", run_dir / "checkpoints" / "best.pt"
    for path in (config_path, best_path):
        if not path.exists():
            raise ToolkitError(f"{run_dir}: not a finished run folder (missing {path.relative_to(run_dir)})")
    cfg = load_experiment(config_path)
    kg = prepare_data(cfg, device=device, progress=progress)
    vectors = torch.load(run_dir / "structure_vectors.pt", map_location="cpu") \
        if cfg.model.structure == "pretrained" else None
    model = build_model(kg, cfg, vectors)
    state = torch.load(best_path, map_location="cpu")
    model.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    return cfg, kg, model.to(device).eval()
