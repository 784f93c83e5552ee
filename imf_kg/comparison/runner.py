"""Run the comparison: every method x every seed under one budget, test once each, one table.

Protocol (the same for IMF-family methods and PyKEEN baselines):

1. The data is loaded once (``prepare_data``) with every modality some method needs; a method whose modality
   the data lacks is skipped with a message (listed under the table), not an error.
2. Each (method, seed) trains from scratch with the seed set first (initialisation, dropout, data order),
   the experiment config's optimiser and sizes, and the same :class:`~imf_kg.comparison.budget.Budget`.
   IMF-family methods train through the shared :class:`~imf_kg.training.Trainer` and
   :class:`~imf_kg.training.OneToNTask`; baselines through PyKEEN's training loops.
3. The epoch with the best validation ``train.metric`` (filtered, both directions, realistic rank) of the
   method's reported output is selected; the test split is evaluated once, on that epoch's parameters.
4. One record per run; the table gives mean ± sample std over seeds of test MRR, Hits@1/3/10 and the
   training time (seconds of ``fit``, validation included).

Files in ``out_dir``: ``comparison.md`` / ``.png`` / ``.json`` (via :mod:`imf_kg.reporting`), ``config.yaml``
(the resolved experiment config) and ``runs/<method>/seed-<s>/`` (each run's ``record.json``; for IMF-family
methods also ``metrics.jsonl``, with ``curves`` the training curve, with ``keep_checkpoints`` the checkpoints).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from imf_kg.comparison.budget import Budget, Deadline, TimeBudgetTask
from imf_kg.comparison.methods import (
    MethodSpec,
    available_modalities,
    build_method_model,
    data_can_provide,
    method_spec,
    needed_modalities,
)
from imf_kg.config import save_config
from imf_kg.errors import ConfigError
from imf_kg.evaluation import evaluate_link_prediction
from imf_kg.experiment import ExperimentConfig, build_optimizer, fresh_folder, prepare_data, pretrained_structure
from imf_kg.io import atomic_write_json
from imf_kg.models.imf import STRUCTURE
from imf_kg.reporting import markdown_table, summarise, write_comparison
from imf_kg.training import OneToNTask, Trainer, resolve_device, seed_everything

TABLE_METRICS = ("mrr", "hits@1", "hits@3", "hits@10", "train_seconds")
PLOT_METRICS = ("mrr", "hits@1", "hits@10")
LABELS = {"mrr": "MRR", "hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10",
          "train_seconds": "train s"}
DIGITS = {"train_seconds": 1}


def run_comparison(cfg: ExperimentConfig, methods: Sequence[str], baselines: Sequence[str], seeds: Sequence[int],
                   budget: Budget, out_dir: str | Path, overwrite: bool = False, progress: bool = False,
                   keep_checkpoints: bool = False, curves: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train and test every method and baseline on every seed; write the reports to ``out_dir``.

    Args:
        cfg: the experiment config (data, sizes, optimiser, ``train.eval_every/patience/metric``).
        methods: names from :data:`~imf_kg.comparison.methods.METHODS`.
        baselines: PyKEEN model names (``TuckER``, ``ComplEx``, ...).
        seeds: one run per seed per method.
        budget: epochs or minutes per run.
        curves: draw each run's ``training_curve.png`` (about a second of matplotlib per run; ``metrics.jsonl``
            is always written).

    Returns:
        ``{"records", "rows", "skipped", "table", "paths", "seconds"}``.
    """
    if not methods and not baselines:
        raise ConfigError("nothing to compare: expected at least one method or baseline")
    if not seeds:
        raise ConfigError("expected at least one seed")
    start = time.perf_counter()
    out_dir = fresh_folder(out_dir, overwrite, "the output folder exists; pass --overwrite to replace it")
    save_config(cfg, out_dir / "config.yaml")
    device = resolve_device(cfg.train.device)

    wanted = needed_modalities(methods, cfg.model.modalities)
    loadable = [m for m in wanted if data_can_provide(cfg.data, m)]
    data_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, modalities=tuple(loadable or [STRUCTURE])))
    kg = prepare_data(data_cfg, device=device, progress=progress)
    available, _ = available_modalities(kg, loadable)
    log(f"{kg.name}: {kg.num_entities} entities, {kg.num_relations} relations, {len(kg.train)}/{len(kg.valid)}/"
        f"{len(kg.test)} triples; modalities {', '.join(available) or 'none'}; {budget.describe()}; "
        f"seeds {list(seeds)}")

    records: list[dict] = []
    skipped: dict[str, str] = {}
    for method in methods:
        spec = method_spec(method, cfg.model, available)
        if isinstance(spec, str):
            skipped[method] = spec
            log(f"{method}: {spec}")
            continue
        for seed in seeds:
            run_dir = out_dir / "runs" / _slug(method) / f"seed-{seed}"
            record = train_and_test_method(spec, kg, cfg, seed, budget, run_dir, device, progress, curves)
            records.append(record)
            _log_record(log, record)
            if not keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in baselines:
        for seed in seeds:
            run_dir = out_dir / "runs" / _slug("pykeen:" + name) / f"seed-{seed}"
            record = train_and_test_baseline(name, kg, cfg, seed, budget, run_dir, device, progress)
            records.append(record)
            _log_record(log, record)

    if not records:
        raise ConfigError(f"every method was skipped: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
    rows = summarise(records, "method", TABLE_METRICS)
    title = (f"{kg.name}: test metrics (filtered, both directions), mean ± std over {len(seeds)} seed(s); "
             f"{budget.describe()}")
    notes = _notes(cfg, skipped, records)
    table = markdown_table(rows, TABLE_METRICS, labels=LABELS, title=title, metric_digits=DIGITS)
    seconds = time.perf_counter() - start
    paths = write_comparison(
        records, out_dir, TABLE_METRICS, title, labels=LABELS, plot_metrics=PLOT_METRICS, metric_digits=DIGITS,
        notes=notes, extra={"dataset": kg.name, "config_name": cfg.name, "seeds": list(seeds),
                            "budget": {"epochs": budget.epochs, "minutes": budget.minutes},
                            "skipped": skipped, "seconds": round(seconds, 2),
                            "torch_threads": torch.get_num_threads(), "device": str(device)})
    return {"records": records, "rows": rows, "skipped": skipped, "table": table + "\n" + notes, "paths": paths,
            "seconds": seconds}


# -------------------------------------------------------------------------------------------- one run
def train_and_test_method(spec: MethodSpec, kg, cfg: ExperimentConfig, seed: int, budget: Budget, run_dir: Path,
                          device: torch.device, progress: bool = False, curves: bool = True) -> dict:
    """Train ``spec`` with ``seed`` through the shared Trainer, select on validation, test once; one record."""
    train_cfg = dataclasses.replace(cfg.train, seed=seed, epochs=budget.epochs,
                                    progress=progress and cfg.train.progress)
    vectors = None
    if cfg.model.structure == "pretrained" and STRUCTURE in spec.config.modalities:
        seeded = dataclasses.replace(cfg, train=train_cfg)
        vectors = pretrained_structure(kg, seeded, _pretrain_dir(run_dir, seed), device, progress)
    seed_everything(seed, train_cfg.deterministic)
    model = build_method_model(spec, kg, vectors)
    optimizer, scheduler = build_optimizer(model, cfg.optim)
    task = OneToNTask(kg, model, batch_size=cfg.optim.batch_size, label_smoothing=cfg.optim.label_smoothing,
                      eval_split="valid", eval_batch_size=cfg.optim.eval_batch_size,
                      smoothing_form=cfg.optim.smoothing_form, primary_output=spec.output)
    if budget.seconds is not None:
        task = TimeBudgetTask(task, train_cfg, Deadline(budget.seconds))
    trainer_class = Trainer if curves else _TrainerWithoutCurves
    trainer = trainer_class(model, task, optimizer, train_cfg, run_dir, scheduler=scheduler)
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    model = trainer.load_best()
    test = evaluate_link_prediction(model, kg, split="test", batch_size=cfg.optim.eval_batch_size, progress=False)
    record = _record(spec.name, "imf", seed, spec.output, test, seconds)
    record.update(best_epoch=result.best_epoch, epochs_run=result.last_epoch, stopped_early=result.stopped_early,
                  out_of_time=getattr(task, "stopped_at_epoch", None) is not None,
                  valid_mrr=result.best_metrics.get("mrr"), num_parameters=_count_parameters(model),
                  model={"class": type(model).__name__, "modalities": list(spec.config.modalities),
                         "fusion": spec.config.fusion if len(spec.config.modalities) > 1 else None,
                         "decision": spec.config.decision})
    atomic_write_json(run_dir / "record.json", record)
    return record


def train_and_test_baseline(name: str, kg, cfg: ExperimentConfig, seed: int, budget: Budget, run_dir: Path,
                            device: torch.device, progress: bool = False) -> dict:
    """Train PyKEEN's ``name`` with ``seed`` (PyKEEN's loop, our validation selection), test once; one record."""
    from imf_kg.baselines.pykeen_baselines import train_pykeen_baseline

    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(budget.seconds) if budget.seconds is not None else None
    run = train_pykeen_baseline(name, kg, cfg, seed, budget.epochs, deadline=deadline, device=device,
                                checkpoint_dir=run_dir / "pykeen", progress=progress)
    test = evaluate_link_prediction(run.predictor, kg, split="test", batch_size=cfg.optim.eval_batch_size,
                                    progress=False)
    record = _record("pykeen:" + run.recipe["model"], "pykeen", seed, "model", test, run.train_seconds)
    record.update(best_epoch=run.best_epoch, epochs_run=run.epochs_run, stopped_early=run.stopped_early,
                  out_of_time=run.out_of_time, valid_mrr=run.best_valid.get("mrr"),
                  num_parameters=run.recipe["num_parameters"], model=run.recipe)
    atomic_write_json(run_dir / "record.json", {**record, "history": run.history})
    shutil.rmtree(run_dir / "pykeen", ignore_errors=True)  # PyKEEN's (empty) failure-checkpoint folder
    return record


class _TrainerWithoutCurves(Trainer):
    """The shared Trainer without its training-curve PNG (metrics.jsonl is still written)."""

    def _refresh_curve(self, force: bool) -> None:
        pass


def _record(method: str, kind: str, seed: int, output: str, test: dict, seconds: float) -> dict:
    """Flat record: the reported output's realistic both-direction test metrics, and every output's MRR."""
    headline = test[output].headline()
    record = {"method": method, "kind": kind, "seed": seed, "output": output}
    record.update({k: float(v) for k, v in headline.items()})
    record["train_seconds"] = round(float(seconds), 3)
    record["test_outputs"] = {name: metrics.headline() for name, metrics in test.items()}
    return record


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _log_record(log, record: dict) -> None:
    valid = record.get("valid_mrr")
    log(f"{record['method']:18s} seed {record['seed']}: test MRR {record['mrr']:.4f} H@1 {record['hits@1']:.4f} "
        f"H@10 {record['hits@10']:.4f} (valid MRR {valid if valid is not None else math.nan:.4f}, best epoch "
        f"{record['best_epoch']} of {record['epochs_run']}, {record['train_seconds']:.1f}s)")


def _notes(cfg: ExperimentConfig, skipped: dict, records: list) -> str:
    outputs, parameters = {}, {}
    for record in records:
        outputs.setdefault(record["method"], record["output"])
        parameters.setdefault(record["method"], record.get("num_parameters"))
    lines = ["Reported output per method: " + ", ".join(f"{m} -> `{o}`" for m, o in outputs.items()) + ".",
             "Trainable parameters: " + ", ".join(f"{m} {p:,}" for m, p in parameters.items() if p is not None) + "."]
    lines.append(f"Selection: best validation `{cfg.train.metric}` (every {cfg.train.eval_every} epoch(s), "
                 f"patience {cfg.train.patience}); test evaluated once per run. Train s = wall-clock seconds of "
                 "training including validation.")
    for method, reason in skipped.items():
        lines.append(f"- {method}: {reason}")
    return "\n".join(lines) + "\n"


def _pretrain_dir(run_dir: Path, seed: int) -> Path:
    """Pre-trained structure vectors are shared by every method of one seed: ``runs/structure-pretrain/seed-s``."""
    path = run_dir.parents[1] / "structure-pretrain" / f"seed-{seed}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slug(name: str) -> str:
    return name.replace(":", "-").replace("/", "-")
