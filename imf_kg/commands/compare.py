"""``imf-kg compare``: fusion methods side by side, with PyKEEN baselines, in one table.

    imf-kg compare --config configs/imf/umls.yaml \\
        --methods structure,text,concat,late,tucker,tucker+decision \\
        --baselines pykeen:TuckER,pykeen:ComplEx --seeds 3 [--epochs E] [--budget-minutes M] [--out DIR]

Every method and baseline trains with the config's sizes and optimiser under the same budget, is selected on
validation, and is tested once per seed; see :mod:`imf_kg.comparison.runner` for the protocol and the files.
"""

from __future__ import annotations

from pathlib import Path

from imf_kg.comparison.methods import METHODS, describe_methods


def add_parser(subparsers) -> None:
    methods_help = "; ".join(f"{k}: {v}" for k, v in describe_methods().items())
    p = subparsers.add_parser("compare", help="train fusion methods and PyKEEN baselines under one budget; "
                                              "one mean ± std table over seeds")
    p.add_argument("--config", required=True, help="YAML experiment config (see configs/imf/)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {', '.join(METHODS)} ({methods_help})")
    p.add_argument("--baselines", default="", help="comma-separated pykeen:<Model>, e.g. pykeen:TuckER,pykeen:ComplEx")
    p.add_argument("--seeds", type=int, default=1, help="runs per method, seeds train.seed .. train.seed + N - 1")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default: train.epochs); with --budget-minutes, an upper bound")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="wall-clock minutes per run instead of epochs: each run trains until its time is up (checked "
                        "at epoch ends; that epoch is then validated); early stopping (train.patience) still applies")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=20 (repeatable)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is much faster on a loaded machine)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints")
    p.add_argument("--curves", action="store_true", help="draw each run's training_curve.png (metrics.jsonl is "
                                                          "always written)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from imf_kg.comparison import Budget, parse_methods, run_comparison
    from imf_kg.comparison.budget import UNBOUNDED_EPOCHS
    from imf_kg.errors import ConfigError
    from imf_kg.experiment import load_experiment

    methods, baselines = parse_methods(",".join(s for s in (args.methods, args.baselines) if s))
    if args.seeds < 1:
        raise ConfigError(f"--seeds: expected an integer >= 1, found {args.seeds}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: expected an integer >= 1, found {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = load_experiment(args.config, args.overrides)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs: expected an integer >= 1, found {args.epochs}")
    if args.budget_minutes is not None:
        if not args.budget_minutes > 0:
            raise ConfigError(f"--budget-minutes: expected a positive number, found {args.budget_minutes}")
        budget = Budget(epochs=args.epochs or UNBOUNDED_EPOCHS, minutes=args.budget_minutes)
    else:
        budget = Budget(epochs=args.epochs or cfg.train.epochs)
    seeds = [cfg.train.seed + i for i in range(args.seeds)]
    out_dir = Path(args.out) if args.out else Path("runs") / f"compare-{Path(args.config).stem}"
    result = run_comparison(cfg, methods, baselines, seeds, budget, out_dir, overwrite=args.overwrite,
                            progress=not args.no_progress, keep_checkpoints=args.keep_checkpoints,
                            curves=args.curves, log=lambda line: print(line, flush=True))
    print(result["table"])
    print(f"{len(result['records'])} runs in {result['seconds']:.0f} s; table, plot and records in {out_dir}")
    return 0
