"""``imf-kg train --config configs/imf/<name>.yaml [--set key=value ...]``: train, select on valid, test once.

Data-parallel on several GPUs or processes: ``torchrun --nproc_per_node N -m imf_kg train --config ...``
(see :mod:`imf_kg.training.distributed`); only rank 0 writes the run folder and prints the summary.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train IMF from a YAML config and evaluate the selected model on test")
    p.add_argument("--config", help="YAML experiment config (see configs/imf/); not needed with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from imf_kg.experiment import load_experiment, run_experiment
    from imf_kg.errors import ConfigError
    from imf_kg.training import is_main_process
    from imf_kg.training.distributed import distributed_session

    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_experiment(run_dir / "config.yaml", args.overrides)
    else:
        if not args.config:
            raise ConfigError("imf-kg train: expected --config FILE (or --resume RUN_DIR)")
        cfg = load_experiment(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    with distributed_session(cfg.train.device):  # joins torchrun's process group when there is one
        results = run_experiment(cfg, run_dir, overwrite=args.overwrite, resume=bool(args.resume),
                                 progress=not args.no_progress and is_main_process())
        if not is_main_process():
            return 0
    if results.get("interrupted"):
        print(f"stopped after epoch {results['last_epoch']}; continue with: imf-kg train --resume {run_dir}")
        return 0
    print((run_dir / "summary.md").read_text(encoding="utf-8"))
    print(f"run folder: {run_dir}")
    return 0
