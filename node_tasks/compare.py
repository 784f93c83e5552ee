"""``node-tasks compare``: several models x several seeds on one dataset, reported like the poster's tables.

Every model is trained with the same experiment config (sizes, optimiser, epochs), except for what the config's
``per_model`` section sets for it (e.g. settings tuned per model on validation), selected on validation
Macro-F1 and tested once; the table gives test Micro-F1 and Macro-F1 as mean ± std over seeds, next to
the poster's numbers where the dataset is IMDB.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from imf_kg.config import load_config
from imf_kg.errors import ConfigError
from imf_kg.reporting import markdown_table, summarise, write_comparison
from torch import nn

from node_tasks.losses import loss_weights_for
from node_tasks.train import MODELS, NodeExperimentConfig, build_model, config_for_model, run_seeds

DEFAULT_MODELS = ("ima", "ima-cross", "ima-align", "ima-latt", "ima-lind", "hgt-early", "hgt-late", "mlp")
METRICS = ("micro_f1", "macro_f1")
LABELS = {"micro_f1": "Micro-F1", "macro_f1": "Macro-F1"}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "hgnn_ima"
# Li et al., IJCAI 2025 poster, "Overall Results" (IMDB columns) and "Ablation Study" (IMDB, Macro-F1 only)
PAPER_RESULTS = {
    "imdb": {
        "ima": {"micro_f1": 0.7578, "macro_f1": 0.7560},
        "hgt-early": {"micro_f1": 0.7407, "macro_f1": 0.7381},
        "hgt-late": {"micro_f1": 0.7419, "macro_f1": 0.7407},
        "ima-cross": {"macro_f1": 0.7344},
        "ima-align": {"macro_f1": 0.7487},
        "ima-latt": {"macro_f1": 0.7436},
        "ima-lind": {"macro_f1": 0.7469},
    },
}


def load_dataset(name: str, options: Optional[Mapping] = None):
    """``synthetic``, ``imdb`` or a dataset folder, through :func:`node_tasks.data.load_dataset` (which also
    checks the data contract); ``options`` are the loader's keyword arguments (``data_options`` in configs)."""
    from node_tasks.data import load_dataset as load

    try:
        return load(name, **dict(options or {}))
    except TypeError as err:  # an unknown data_options key
        raise ConfigError(f"data_options for dataset {name!r}: {err}") from None


def default_config_path(dataset: str) -> Optional[Path]:
    """configs/hgnn_ima/<dataset>.yaml for a named dataset, when that file exists."""
    path = CONFIG_DIR / f"{Path(dataset).name.lower()}.yaml"
    return path if path.is_file() else None


def fusion_margins(rows: Sequence[Mapping], method: str = "ima", baselines=("hgt-early", "hgt-late"),
                   metrics: Sequence[str] = METRICS) -> List[Dict]:
    """How far ``method`` is ahead of each baseline: margin = difference of means, in units of the larger
    of the two standard deviations; ``beats_by_2_std`` is ``margin > 2 * max(std)``. With fewer than two runs of
    either model (rows with ``n`` < 2) there is no standard deviation: ``margin_in_std`` is NaN and the verdict
    False, not a win by "infinitely many" deviations."""
    by_name = {r["method"]: r for r in rows}
    if method not in by_name:
        return []
    out = []
    for base in baselines:
        if base not in by_name:
            continue
        for metric in metrics:
            a, b = by_name[method], by_name[base]
            margin = a[f"{metric}_mean"] - b[f"{metric}_mean"]
            spread = max(a[f"{metric}_std"], b[f"{metric}_std"])
            if min(a.get("n", 2), b.get("n", 2)) < 2:
                beats, in_std = False, math.nan
            else:
                beats = bool(margin > 2 * spread)
                in_std = margin / spread if spread > 0 else math.copysign(math.inf, margin)
            out.append({"method": method, "baseline": base, "metric": metric, "margin": margin, "max_std": spread,
                        "beats_by_2_std": beats, "margin_in_std": in_std})
    return out


def run_comparison(dataset: str, models: Sequence[str], seeds: Sequence[int], config: NodeExperimentConfig,
                   out_dir: Optional[str | Path] = None, keep_runs: bool = False, log=print,
                   data_seeds: Optional[Sequence[int]] = None, jobs: int = 1,
                   threads_per_job: Optional[int] = None) -> Dict:
    """Train every model on every seed; write the table, plot and JSON to ``out_dir`` (when given).

    Args:
        data_seeds: generated datasets only (``synthetic``): draw one graph per data seed (``data_options.seed``)
            and train every model with every seed on each. The table then pools graphs x seeds, so its std
            includes the graph-to-graph variation, and ``graph_margins`` gives the margins graph by graph.
            None: the one graph of ``config.data_options``.
        jobs: runs (model x seed) trained at once, each in its own worker process (1: one after another in this
            process). Every run seeds itself, so the records are those of ``jobs=1`` with the same number of
            threads per run, in the same order; only their timings differ.
        threads_per_job: torch threads of each worker (default: the CPU count divided by ``jobs``, at least 1).
            Small graphs train fastest with one thread per run and as many runs as cores.

    Returns {"records", "rows", "margins", "graph_margins", "table", "paths", "seconds"}; with ``data_seeds``
    every record carries its ``data_seed``.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; expected some of {', '.join(MODELS)}")
    if not seeds:
        raise ConfigError("expected at least one seed")
    if data_seeds is not None and (Path(dataset).name.lower() != "synthetic" or not data_seeds):
        raise ConfigError(f"data seeds {list(data_seeds)} for dataset {dataset!r}: only the generated 'synthetic' "
                          f"dataset draws a new graph per seed, and at least one is needed")
    jobs = int(jobs)
    if jobs < 1:
        raise ConfigError(f"jobs={jobs}: expected at least 1")
    start = time.perf_counter()
    records: List[Dict] = []
    graphs = [None] if data_seeds is None else [int(d) for d in data_seeds]
    for graph in graphs:
        options = config.data_options if graph is None else {**config.data_options, "seed": graph}
        data = load_dataset(dataset, options)
        tag = {} if graph is None else {"data_seed": graph}
        run_root = None
        if out_dir is not None and keep_runs:
            run_root = Path(out_dir) / "runs" / ("" if graph is None else f"graph{graph}")
        plan = reuse_plan(models, lambda name: training_fingerprint(name, data, config))
        to_train = [name for name, source in plan if source is None]
        if jobs == 1:
            done = {}
            for name in to_train:
                run_seeds(name, data, seeds, config, run_root=run_root,
                          on_record=lambda r: done.setdefault(r["method"], []).append(_report({**r, **tag}, log)))
        else:
            done = _run_parallel(to_train, seeds, data, config, run_root, jobs, threads_per_job,
                                 lambda r: _report({**r, **tag}, log))
        for name, source in plan:
            if source is None:
                records.extend(done[name])
            else:  # provably the same computation (e.g. ima-latt under hard masking, where L_att is identically 0)
                same = [dict(r, method=name, same_as=source) for r in done[source]]
                records.extend(same)
                log(f"{name:10s} trains exactly like {source} here; its {len(same)} records are reused")
    rows = summarise(records, "method", METRICS)
    references = PAPER_RESULTS.get(Path(dataset).name.lower())
    runs = f"{len(seeds)} seed(s)" if data_seeds is None else f"{len(seeds)} seed(s) x {len(graphs)} graphs"
    title = f"{Path(dataset).name}: test Micro-F1 / Macro-F1, mean ± std over {runs}"
    table = markdown_table(rows, METRICS, labels=LABELS, references=references, title=title)
    margins = fusion_margins(rows)
    graph_margins = [] if data_seeds is None else [
        {"data_seed": g, **m} for g in graphs
        for m in fusion_margins(summarise([r for r in records if r["data_seed"] == g], "method", METRICS))]
    seconds = time.perf_counter() - start
    paths = {}
    if out_dir is not None:
        from node_tasks.train import experiment_as_dict

        paths = write_comparison(records, out_dir, METRICS, title, labels=LABELS, references=references,
                                 extra={"dataset": dataset, "seeds": list(seeds), "data_seeds": None if data_seeds is None else graphs,
                                        "margins": margins, "graph_margins": graph_margins,
                                        "config": experiment_as_dict(config), "seconds": seconds})
    return {"records": records, "rows": rows, "margins": margins, "graph_margins": graph_margins, "table": table,
            "paths": paths, "seconds": seconds}


def _report(record: Dict, log) -> Dict:
    graph = f" graph {record['data_seed']}" if "data_seed" in record else ""
    log(f"{record['method']:10s} seed {record['seed']}{graph}: test Micro-F1 {record['micro_f1']:.4f} "
        f"Macro-F1 {record['macro_f1']:.4f} (val Macro-F1 {record.get('val_macro_f1', math.nan):.4f}, "
        f"epoch {record['best_epoch']}, {record['seconds']:.1f}s, {record.get('epoch_s', math.nan):.3f}s/epoch, "
        f"peak RSS {record.get('peak_rss_mb', math.nan):.0f} MB)")
    return record


_WORKER_DATA = None  # the graph of a worker process (set once per pool by _init_worker)


def _init_worker(data, threads: int) -> None:
    global _WORKER_DATA
    import torch

    torch.set_num_threads(threads)
    _WORKER_DATA = data


def _train_one(name: str, seed: int, config: NodeExperimentConfig, run_root) -> Dict:
    return run_seeds(name, _WORKER_DATA, [seed], config, run_root=run_root).records[0]


def _run_parallel(names, seeds, data, config, run_root, jobs, threads_per_job, report) -> Dict[str, List[Dict]]:
    """Train every (model, seed) of ``names`` x ``seeds`` in ``jobs`` spawned worker processes; model -> records
    in seed order. The graph is sent to each worker once; ``report`` sees each record as its run ends."""
    tasks = [(name, int(seed), config, run_root) for name in names for seed in seeds]
    results = run_in_workers(_train_one, tasks, data, jobs, threads_per_job, report)
    by_task = {(task[0], task[1]): record for task, record in zip(tasks, results)}
    return {name: [by_task[name, int(seed)] for seed in seeds] for name in names}


def run_in_workers(worker, tasks: Sequence[tuple], data, jobs: int, threads_per_job: Optional[int],
                   report) -> List[Dict]:
    """``worker(*task)`` for every task, in ``jobs`` spawned processes that each hold ``data`` (sent once per
    worker, read by the worker function from ``_WORKER_DATA``) and run ``threads_per_job`` torch threads
    (default: the CPU count divided by ``jobs``). Returns the results in task order; ``report`` sees each
    result as its task ends. A failed task's error is re-raised here, and the tasks not yet started are
    cancelled."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = threads_per_job or max(1, (os.cpu_count() or 1) // jobs)
    if not tasks:
        return []
    results = {}
    # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang in its first parallel op
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(data, threads)) as pool:
        futures = {pool.submit(worker, *task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = report(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[i] for i in range(len(tasks))]


def reuse_plan(keys: Sequence, fingerprint) -> List[tuple]:
    """``[(key, source), ...]``: ``source`` is the first earlier key with the same ``fingerprint(key)``, whose runs
    ``key`` reuses (provably the same computation), or None where ``key`` must be trained."""
    first: Dict[str, object] = {}
    plan = []
    for key in keys:
        mark = fingerprint(key)
        plan.append((key, first.get(mark)))
        first.setdefault(mark, key)
    return plan


def training_fingerprint(name: str, data, config: NodeExperimentConfig) -> str:
    """Everything that determines a run of ``name``: the model's structure (its module tree, which names
    every layer's variant, ablation switches and sizes), the model settings and the effective loss weights.
    L_att's weight is dropped when the model masks missing modalities, since L_att is then identically 0.
    Settings given per model (``per_model``) count, and so do the optimiser and training settings."""
    config = config_for_model(config, name)
    model, ablations = build_model(name, data, config.model)
    weights = loss_weights_for(ablations, config.loss)
    if getattr(model, "missing_modality", None) == "mask":
        weights = replace(weights, attention=0.0)
    # the model's settings too (less its name, which only picks the ablation, already in the structure): a
    # module's repr need not show every setting (a custom __repr__ may leave one out)
    settings = replace(config.model, name="")
    return f"{nn.Module.__repr__(model)}|{settings}|{weights}|{config.optim}|{config.train}|{config.mini_batch}"


def resolve_config(dataset: str, config_path: Optional[str], overrides: Sequence[str]) -> NodeExperimentConfig:
    """The experiment config: ``--config`` or configs/hgnn_ima/<dataset>.yaml or the built-in defaults."""
    path = Path(config_path) if config_path else default_config_path(dataset)
    if path is None:
        from imf_kg.config import apply_overrides

        return apply_overrides(NodeExperimentConfig(dataset=dataset), overrides)
    config = load_config(path, NodeExperimentConfig, overrides)
    if config_path is None or config.dataset != dataset:
        config = replace(config, dataset=dataset)
    return config
