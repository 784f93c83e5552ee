"""``node-tasks``: train and compare node classifiers on multimodal heterogeneous networks (HGNN-IMA, IJCAI 2025).

    node-tasks train --config configs/hgnn_ima/synthetic.yaml [--set model.hidden=32] [--run-dir DIR]
    torchrun --nproc_per_node N -m node_tasks train --config ...     (data-parallel; node_tasks.distributed)
    node-tasks compare --dataset synthetic --models ima,hgt-early,hgt-late --seeds 5 [--out DIR]
    node-tasks tune --dataset synthetic --models ima,hgt-early --grid model.layers=1,2,3 --seeds 2 [--out DIR]

Errors caused by the input (:class:`~imf_kg.errors.ToolkitError`) end in one line on stderr and exit
status 2, never a traceback (the same convention as ``imf-kg``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imf_kg.errors import ConfigError, ToolkitError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model from a YAML config, select on validation, test once")
    p.add_argument("--config", required=True, help="YAML experiment config (see configs/hgnn_ima/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    _add_threads(p)
    p.set_defaults(func=_run_train)


def _add_compare(sub) -> None:
    from node_tasks.compare import DEFAULT_MODELS

    p = sub.add_parser("compare", help="several models x seeds; prints a mean ± std table, saves plot + JSON")
    p.add_argument("--dataset", default="synthetic", help="synthetic, imdb, or a dataset folder")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated (default {','.join(DEFAULT_MODELS)}); also ima-ref, the published code's variant")
    p.add_argument("--seeds", default="5", help="a count N (seeds 0..N-1) or a comma-separated list")
    p.add_argument("--data-seeds", default=None,
                   help="synthetic only: also draw one graph per data seed (a count N or a list) and pool them, so "
                        "the std includes graph-to-graph variation; margins are also printed per graph")
    p.add_argument("--config", default=None,
                   help="experiment config shared by all models (default configs/hgnn_ima/<dataset>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every model (repeatable)")
    p.add_argument("--out", default=None, help="folder for comparison.md/.png/.json (default runs/compare-<dataset>)")
    p.add_argument("--keep-runs", action="store_true", help="keep each run's folder (checkpoints, curves) under OUT/runs")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (default 1). With --jobs N each run gets "
                        "--threads threads (default: CPU count / N); the records are the same as one at a time "
                        "with that many threads, only faster, e.g. --jobs 2 --threads 1 on two cores")
    _add_threads(p)
    p.set_defaults(func=_run_compare)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="choose each model's settings from a grid on VALIDATION; writes a config "
                                    "for compare (test is never evaluated)")
    p.add_argument("--dataset", default="synthetic", help="synthetic, imdb, or a dataset folder")
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. ima,hgt-early,hgt-late")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
                   help="one axis of the grid, e.g. --grid model.layers=1,2,3 (repeatable; the cells are the "
                        "product of the axes; values are YAML, brackets optional: model.gate_dropout=[[0.6, 0.5], [0, 0]])")
    p.add_argument("--seeds", default="2", help="a count N (seeds 0..N-1) or a comma-separated list (default 2)")
    p.add_argument("--config", default=None,
                   help="experiment config to tune from (default configs/hgnn_ima/<dataset>.yaml); tuned.yaml "
                        "names it as its base")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every model and cell (repeatable)")
    p.add_argument("--out", default=None,
                   help="folder for tuned.yaml and tuning.md/.png/.json (default runs/tune-<dataset>)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (as compare)")
    _add_threads(p)
    p.set_defaults(func=_run_tune)


def _add_threads(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice). On a shared or small machine 1 is often "
                        "several times faster for these small graphs (no oversubscription)")


def _parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        count = int(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected a count or a comma-separated list of integers") from None
    if count < 1:
        raise ConfigError(f"{flag} {text!r}: expected at least 1")
    return list(range(count))


def _run_train(args) -> int:
    """One model; under ``torchrun`` data-parallel (node_tasks.distributed), rank 0 alone writing files."""
    from imf_kg.config import load_config, save_config
    from imf_kg.experiment import fresh_folder
    from imf_kg.io import atomic_write_json
    from imf_kg.training import is_main_process
    from imf_kg.training.distributed import distributed_session, on_main
    from node_tasks.compare import load_dataset
    from node_tasks.train import NodeExperimentConfig, train_and_test

    config = load_config(args.config, NodeExperimentConfig, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    with distributed_session(config.train.device):  # joins torchrun's process group when there is one
        on_main(lambda: save_config(config, fresh_folder(
            run_dir, args.overwrite, "run folder exists; pass --overwrite to replace it or --run-dir")
            / "config.yaml"))
        data = load_dataset(config.dataset, config.data_options)
        record = train_and_test(config, data, run_dir)
        if not is_main_process():
            return 0
        atomic_write_json(run_dir / "results.json", record)
    print(f"{config.model.name} on {config.dataset}: best epoch {record['best_epoch']} "
          f"(val Macro-F1 {record.get('val_macro_f1', float('nan')):.4f}); "
          f"test Micro-F1 {record['micro_f1']:.4f}, Macro-F1 {record['macro_f1']:.4f}")
    expected = (config.paper or {}).get("expected", {}).get(config.model.name)
    if expected:
        print(f"paper ({config.paper.get('citation', 'poster')}): "
              + ", ".join(f"{k} {v}" for k, v in expected.items()))
    print(f"run folder: {run_dir}")
    return 0


def _run_compare(args) -> int:
    from node_tasks.compare import resolve_config, run_comparison

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = _parse_seeds(args.seeds)
    config = resolve_config(args.dataset, args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{Path(args.dataset).name}"
    data_seeds = None if args.data_seeds is None else _parse_seeds(args.data_seeds, "--data-seeds")
    result = run_comparison(args.dataset, models, seeds, config, out, keep_runs=args.keep_runs,
                            log=lambda line: print(line, file=sys.stderr, flush=True), data_seeds=data_seeds,
                            jobs=args.jobs, threads_per_job=args.threads)
    print(result["table"])
    for m in result["margins"]:
        print(f"{m['method']} vs {m['baseline']} ({m['metric']}): {m['margin']:+.4f} "
              f"= {m['margin_in_std']:.1f} x max std; beats by > 2 std: {m['beats_by_2_std']}")
    for m in result["graph_margins"]:
        print(f"  graph {m['data_seed']}: {m['method']} vs {m['baseline']} ({m['metric']}): {m['margin']:+.4f} "
              f"= {m['margin_in_std']:.1f} x max std; beats by > 2 std: {m['beats_by_2_std']}")
    print(f"{len(result['records'])} runs in {result['seconds']:.0f}s; "
          + ", ".join(f"{k}: {v}" for k, v in result["paths"].items()))
    return 0


def _run_tune(args) -> int:
    from node_tasks.compare import default_config_path, resolve_config
    from node_tasks.tune import parse_grid, run_tuning

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    axes = [parse_grid(spec) for spec in args.grid]
    seeds = _parse_seeds(args.seeds)
    config = resolve_config(args.dataset, args.config, args.overrides)
    base = Path(args.config) if args.config else default_config_path(args.dataset)
    out = Path(args.out) if args.out else Path("runs") / f"tune-{Path(args.dataset).name}"
    result = run_tuning(args.dataset, models, axes, seeds, config, out, base_path=base,
                        log=lambda line: print(line, file=sys.stderr, flush=True), jobs=args.jobs,
                        threads_per_job=args.threads)
    print(result["table"])
    print(f"{len(result['records'])} runs in {result['seconds']:.0f}s; "
          + ", ".join(f"{k}: {v}" for k, v in result["paths"].items()))
    print(f"next, test once: node-tasks compare --dataset {args.dataset} --config {result['paths']['config']} "
          f"--models {','.join(models)} --seeds 5")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="node-tasks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    _add_train(sub)
    _add_compare(sub)
    _add_tune(sub)
    return parser


def main(argv=None) -> int:
    from imf_kg.training.memory import keep_freed_memory

    keep_freed_memory()  # see imf_kg/training/memory.py
    args = build_parser().parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads {args.threads}: expected at least 1")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except ToolkitError as err:
        print(f"node-tasks: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("node-tasks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
