"""``node-tasks tune``: choose each model's settings on VALIDATION from a grid, and write them as a config.

A fair comparison of fusion methods gives every model its own best settings, chosen on validation, before test
is evaluated once (``node-tasks compare``). This does the choosing:

    node-tasks tune --dataset synthetic --models ima,hgt-early,hgt-late \\
        --grid model.layers=1,2,3 --grid model.dropout=0.2,0.5 --seeds 2 --jobs 2 --threads 1
    node-tasks compare --dataset synthetic --config runs/tune-synthetic/tuned.yaml --seeds 5 --models ...

Every model is trained on every cell of the grid (the product of the ``--grid`` axes) with every seed, as
``compare`` would train it (the config, its ``per_model`` entry, then the cell). The test split is never
evaluated: runs stop at the checkpoint chosen on validation Macro-F1 (:func:`node_tasks.train.train_selected`).
The cell with the highest mean validation Macro-F1 over the seeds is chosen for each model; on an exact tie the
cell listed first wins. The output folder gets

- ``tuned.yaml``: the config that was tuned (as its ``base``) with each model's chosen cell in ``per_model``,
  so that ``compare --config tuned.yaml`` trains every model with its choice;
- ``tuning.md`` / ``tuning.png`` / ``tuning.json``: validation Macro-F1 of every model on every cell (mean ±
  sample std over seeds), the choices, and every run's record.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from imf_kg.config import config_to_dict, load_config, parse_override
from imf_kg.config_files import merge_sections
from imf_kg.errors import ConfigError
from imf_kg.io import atomic_write_figure, atomic_write_json, atomic_write_text

from node_tasks.train import MODELS, NodeExperimentConfig, config_for_model

Cell = Tuple[Tuple[str, Any], ...]  # ((dotted key, value), ...) in the order of the --grid axes
SELECTION = "val_macro_f1"


def parse_grid(spec: str) -> Tuple[str, List[Any]]:
    """``"model.layers=1,2,3"`` or ``"model.layers=[1, 2, 3]"`` -> ``("model.layers", [1, 2, 3])``.

    The values are one YAML flow list (the brackets may be left out), so a value can itself be a list:
    ``model.gate_dropout=[[0.6, 0.5], [0.0, 0.0]]``."""
    key, sep, raw = str(spec).partition("=")
    raw = raw.strip()
    if not sep or not key.strip() or not raw:
        raise ConfigError(f"--grid {spec}: expected key.path=value1,value2,..., e.g. model.layers=1,2,3")
    text = raw if raw.startswith("[") else f"[{raw}]"
    keys, values = parse_override(f"{key.strip()}={text}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--grid {spec}: expected a non-empty list of values, e.g. model.layers=1,2,3")
    if any(isinstance(k, int) for k in keys):
        raise ConfigError(f"--grid {spec}: expected a key path of section and setting names, without list positions")
    seen = []
    for value in values:
        if value in seen:
            raise ConfigError(f"--grid {spec}: the value {value!r} is listed twice; expected distinct values")
        seen.append(value)
    return ".".join(str(k) for k in keys), values


def grid_cells(axes: Sequence[Tuple[str, Sequence[Any]]]) -> List[Cell]:
    """Every combination of the axes' values, the first axis varying slowest (the order of ties)."""
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--grid: the key(s) {sorted({k for k in keys if keys.count(k) > 1})} are given twice; "
                          "expected each key once, with all its values")
    return [tuple(zip(keys, values)) for values in itertools.product(*(v for _, v in axes))]


def cell_label(cell: Cell) -> str:
    """``layers=3, dropout=0.5``: the last part of each key, unless two keys share it."""
    lasts = [k.rsplit(".", 1)[-1] for k, _ in cell]
    names = [last if lasts.count(last) == 1 else key for (key, _), last in zip(cell, lasts)]
    return ", ".join(f"{name}={_short(value)}" for name, (_, value) in zip(names, cell))


def _short(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip().removesuffix("...").strip()


def _nested(cell: Cell) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in cell:
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def with_cell(config: NodeExperimentConfig, name: str, cell: Cell) -> NodeExperimentConfig:
    """``config`` with ``cell`` laid over model ``name``'s ``per_model`` entry, checked: what ``name`` trains
    with on that cell (a key that cannot be set per model, such as the data, is a :class:`ConfigError`)."""
    entry = merge_sections(config.per_model.get(name, {}), _nested(cell))
    tuned = replace(config, per_model={**config.per_model, name: entry})
    try:
        config_for_model(tuned, name)
    except ConfigError as err:
        raise ConfigError(f"--grid {cell_label(cell)} for {name}: {err}") from None
    return tuned


def choose(rows: Sequence[Mapping]) -> Dict[str, int]:
    """model -> index of its chosen cell: the highest mean validation Macro-F1, the first cell on an exact tie.
    ``rows`` are :func:`summarise_tuning` rows (``method``, ``cell``, ``val_macro_f1_mean``)."""
    best: Dict[str, Tuple[int, float]] = {}
    for row in sorted(rows, key=lambda r: r["cell"]):
        score = row[f"{SELECTION}_mean"]
        if math.isnan(score):
            continue
        current = best.get(row["method"])
        if current is None or score > current[1]:
            best[row["method"]] = (row["cell"], score)
    return {name: index for name, (index, _) in best.items()}


def summarise_tuning(records: Sequence[Mapping]) -> List[Dict]:
    """One row per (model, cell): ``n`` seeds and mean / sample std of the validation metrics."""
    from imf_kg.reporting import summarise

    groups: Dict[Tuple[str, int], List[Mapping]] = {}
    for record in records:
        groups.setdefault((record["method"], record["cell"]), []).append(record)
    rows = []
    for (name, cell), members in groups.items():
        row = summarise(members, "method", ("val_macro_f1", "val_micro_f1"))[0]
        rows.append({**row, "cell": cell})
    return rows


def _validate_one(name: str, seed: int, config: NodeExperimentConfig, cell: int) -> Dict:
    from node_tasks import compare

    return _validation_record(name, seed, config, cell, compare._WORKER_DATA)


def _validation_record(name: str, seed: int, config: NodeExperimentConfig, cell: int, data) -> Dict:
    from node_tasks.train import _cost, train_selected

    with tempfile.TemporaryDirectory(prefix="node-tasks-tune-") as scratch:
        trained = train_selected(replace(config, model=replace(config.model, name=name)), data,
                                 Path(scratch) / "run", seed=seed, draw_curve=False)
    result = trained.result
    return {"method": name, "cell": cell, "seed": trained.seed, "best_epoch": result.best_epoch,
            **{f"val_{k}": v for k, v in result.best_metrics.items()}, "seconds": trained.seconds,
            **_cost(result.history, trained.model)}


def run_tuning(dataset: str, models: Sequence[str], axes: Sequence[Tuple[str, Sequence[Any]]],
               seeds: Sequence[int], config: NodeExperimentConfig, out_dir: Optional[str | Path] = None,
               base_path: Optional[str | Path] = None, log=print, jobs: int = 1,
               threads_per_job: Optional[int] = None) -> Dict:
    """Train ``models`` x grid cells x ``seeds`` (validation only), choose a cell per model, write the outputs.

    Args:
        axes: ``[(dotted key, values), ...]`` (:func:`parse_grid`); the cells are their product.
        base_path: the config file ``config`` was loaded from; ``tuned.yaml`` then names it as its ``base`` and
            holds only what differs from it. None: ``tuned.yaml`` holds the whole config.
        jobs, threads_per_job: as in :func:`node_tasks.compare.run_comparison`.

    Returns {"records", "rows", "cells", "choices" (model -> cell index), "table", "config" (the tuned
    config), "paths", "seconds"}.
    """
    from node_tasks.compare import load_dataset, reuse_plan, run_in_workers, training_fingerprint

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; expected some of {', '.join(MODELS)}")
    if not models or not seeds:
        raise ConfigError("expected at least one model and one seed")
    if not axes:
        raise ConfigError("expected at least one --grid axis, e.g. --grid model.layers=1,2,3")
    jobs = int(jobs)
    if jobs < 1:
        raise ConfigError(f"jobs={jobs}: expected at least 1")
    cells = grid_cells(axes)
    configs = {(name, i): with_cell(config, name, cell) for name in models for i, cell in enumerate(cells)}
    start = time.perf_counter()
    data = load_dataset(dataset, config.data_options)
    # ((name, cell), source or None): a provably identical run is trained once
    plan = reuse_plan(list(configs), lambda key: training_fingerprint(key[0], data, configs[key]))
    tasks = [(name, int(seed), configs[name, i], i) for (name, i), source in plan if source is None for seed in seeds]
    log(f"tuning {len(models)} model(s) on {len(cells)} cell(s) x {len(seeds)} seed(s): {len(tasks)} runs "
        f"(validation only; test is never evaluated)")

    def report(record):
        log(f"{record['method']:10s} {cell_label(cells[record['cell']])} seed {record['seed']}: val Macro-F1 "
            f"{record['val_macro_f1']:.4f} (epoch {record['best_epoch']}, {record['seconds']:.1f}s)")
        return record

    if jobs == 1:
        trained = [report(_validation_record(*task, data)) for task in tasks]
    else:
        trained = run_in_workers(_validate_one, tasks, data, jobs, threads_per_job, report)
    done = {(r["method"], r["cell"], r["seed"]): r for r in trained}
    records = []
    for (name, i), source in plan:
        for seed in seeds:
            if source is None:
                records.append(done[name, i, int(seed)])
            else:
                records.append(dict(done[source[0], source[1], int(seed)], method=name, cell=i,
                                    same_as=f"{source[0]} on {cell_label(cells[source[1]])}"))
    rows = summarise_tuning(records)
    choices = choose(rows)
    missing = [m for m in models if m not in choices]
    if missing:
        raise ConfigError(f"no validation score for {missing} on any cell; nothing to choose from")
    tuned = config
    for name in models:
        tuned = with_cell(tuned, name, cells[choices[name]])
    table = tuning_table(rows, models, cells, choices, dataset, len(seeds))
    seconds = time.perf_counter() - start
    paths = {}
    if out_dir is not None:
        paths = write_tuning(Path(out_dir), records, rows, models, axes, cells, choices, tuned, base_path,
                             dataset, seeds, table, seconds)
    return {"records": records, "rows": rows, "cells": cells, "choices": choices, "table": table, "config": tuned,
            "paths": paths, "seconds": seconds}


def tuning_table(rows, models, cells, choices, dataset, n_seeds) -> str:
    by = {(r["method"], r["cell"]): r for r in rows}
    lines = [f"### {Path(dataset).name}: validation Macro-F1 per grid cell, mean ± std over {n_seeds} seed(s) "
             "(chosen cell in bold; test not evaluated)", "",
             "| model | " + " | ".join(cell_label(c) for c in cells) + " | chosen |",
             "|---|" + "---|" * (len(cells) + 1)]
    for name in models:
        cells_text = []
        for i in range(len(cells)):
            row = by[name, i]
            text = f"{row['val_macro_f1_mean']:.4f} ± {row['val_macro_f1_std']:.4f}"
            cells_text.append(f"**{text}**" if choices.get(name) == i else text)
        lines.append(f"| {name} | " + " | ".join(cells_text) + f" | {cell_label(cells[choices[name]])} |")
    return "\n".join(lines)


def tuned_yaml(tuned: NodeExperimentConfig, base_path: Optional[str | Path], out_path: Path, header: str) -> str:
    """The text of ``tuned.yaml``: ``base:`` (relative to ``out_path``'s folder) and what differs from the base
    file, or the whole config when there is no base file. Checked: loading the text gives ``tuned``."""
    full = config_to_dict(tuned)
    body: Dict[str, Any] = full
    if base_path is not None:
        base = config_to_dict(load_config(base_path, NodeExperimentConfig))
        reference = base_reference(Path(base_path).resolve(), out_path.resolve().parent)
        body = {"base": reference, **_difference(base, full)}
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=True)


def base_reference(base_file: Path, folder: Path) -> str:
    """How a file in ``folder`` names ``base_file`` (both absolute): relative where the two share a folder below
    the root (a run folder inside the project), else the absolute path."""
    shared = os.path.commonpath([base_file, folder]) != base_file.anchor
    return Path(os.path.relpath(base_file, folder)).as_posix() if shared else base_file.as_posix()


def _difference(base: Mapping, new: Mapping) -> Dict[str, Any]:
    """The keys of ``new`` whose values differ from ``base``'s; sections are compared key by key. A section key
    that ``new`` lacks cannot be expressed (a base's keys can only be overridden), so ``new`` must hold every
    key of ``base`` (true of two configs of one schema, except inside free-form mappings)."""
    out = {}
    for key, value in new.items():
        if key not in base:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            inner = _difference(base[key], value)
            if inner:
                out[key] = inner
        elif value != base[key]:
            out[key] = value
    return out


def write_tuning(out_dir: Path, records, rows, models, axes, cells, choices, tuned, base_path, dataset, seeds,
                 table, seconds) -> Dict[str, Path]:
    """Write tuned.yaml (checked: it loads back to what every model trains with), tuning.md/.json/.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = out_dir / "tuned.yaml"
    grid = " ".join(f"--grid {k}={','.join(_short(v) for v in values)}" for k, values in axes)
    header = (f"# Written by node-tasks tune ({time.strftime('%Y-%m-%d')}): each model's cell of the grid\n"
              f"#   {grid}\n"
              f"# chosen on VALIDATION Macro-F1 (mean over seeds {list(seeds)}); the test split was not evaluated.\n"
              f"# Every cell's score: tuning.md. Evaluate the choices on test once with\n"
              f"#   node-tasks compare --dataset {dataset} --config {yaml_path} --models {','.join(models)} --seeds 5\n")
    text = tuned_yaml(tuned, base_path, yaml_path, header)
    atomic_write_text(yaml_path, text)
    reloaded = load_config(yaml_path, NodeExperimentConfig)
    if any(config_to_dict(config_for_model(reloaded, m)) != config_to_dict(config_for_model(tuned, m)) for m in models):
        # a setting that inheritance cannot express (e.g. a key removed from a free-form mapping): write it whole
        atomic_write_text(yaml_path, tuned_yaml(tuned, None, yaml_path, header))
    atomic_write_text(out_dir / "tuning.md", table + "\n")
    atomic_write_json(out_dir / "tuning.json", {
        "dataset": dataset, "models": list(models), "seeds": list(seeds),
        "grid": [[k, list(values)] for k, values in axes],
        "cells": [dict(c) for c in cells], "selection": f"highest mean {SELECTION}; the first cell on a tie",
        "choices": {m: {"cell": choices[m], "settings": dict(cells[choices[m]])} for m in models},
        "rows": rows, "records": list(records), "seconds": seconds})
    plot = out_dir / "tuning.png"
    _plot(rows, models, cells, choices, plot, dataset)
    return {"config": yaml_path, "table": out_dir / "tuning.md", "records": out_dir / "tuning.json", "plot": plot}


def _plot(rows, models, cells, choices, path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["method"], r["cell"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cells) + 3), 4.0))
    xs = list(range(len(cells)))
    for name in models:
        means = [by[name, i]["val_macro_f1_mean"] for i in xs]
        stds = [by[name, i]["val_macro_f1_std"] for i in xs]
        line = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
        ax.plot([choices[name]], [means[choices[name]]], marker="*", markersize=14, color=line[0].get_color())
    ax.set_xticks(xs)
    ax.set_xticklabels([cell_label(c) for c in cells], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("validation Macro-F1 (mean ± std)")
    ax.set_title(f"{Path(dataset).name}: tuning on validation (star: chosen cell)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=120)
    plt.close(fig)
