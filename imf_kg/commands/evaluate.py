"""``imf-kg evaluate <run dir> [--split valid|test]``: filtered ranking of a trained run's selected model."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a trained run's best-validation model")
    p.add_argument("run_dir", help="a run folder written by imf-kg train")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from imf_kg.evaluation import evaluate_link_prediction
    from imf_kg.evaluation.metrics import metrics_table
    from imf_kg.experiment import load_run
    from imf_kg.training import resolve_device

    device = resolve_device(args.device)
    cfg, kg, model = load_run(args.run_dir, device=device)
    results = evaluate_link_prediction(model, kg, split=args.split, batch_size=args.batch_size, device=device)
    if args.json:
        print(json.dumps({name: m.to_dict() for name, m in results.items()}, indent=2))
    else:
        print(f"{cfg.name} on {kg.name}, {args.split} split (filtered, both directions, realistic rank)\n")
        print(metrics_table(results))
    return 0
