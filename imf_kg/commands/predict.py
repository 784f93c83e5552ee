"""``imf-kg predict <run dir> --head E --relation R [--top 10]``: top tails with every modality's score."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="rank tails for (head, relation) with a trained run")
    p.add_argument("run_dir", help="a run folder written by imf-kg train")
    p.add_argument("--head", required=True, help="entity name (use --tail-query to predict heads instead)")
    p.add_argument("--relation", required=True, help="relation name; append ^-1 for the inverse relation")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--filter-known", action="store_true", help="hide tails already known in train/valid/test")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from imf_kg.errors import ToolkitError
    from imf_kg.experiment import load_run

    cfg, kg, model = load_run(args.run_dir, device=args.device)
    if args.head not in kg.entity_to_id:
        raise ToolkitError(f"--head: unknown entity {args.head!r} in {kg.name}; expected one of "
                           f"{', '.join(sorted(kg.entity_names)[:5])}, ...")
    name, inverse = (args.relation[:-3], True) if args.relation.endswith("^-1") else (args.relation, False)
    if name not in kg.relation_to_id:
        raise ToolkitError(f"--relation: unknown relation {name!r} in {kg.name}; expected one of "
                           f"{', '.join(sorted(kg.relation_names)[:5])}, ...")
    head = torch.tensor([kg.entity_to_id[args.head]], device=args.device)
    relation = torch.tensor([kg.relation_to_id[name] + (kg.num_relations if inverse else 0)], device=args.device)
    with torch.inference_mode():
        model.prepare_evaluation()
        outputs = {k: v[0].float().cpu() for k, v in model.score_outputs(head, relation).items()}
        model.end_evaluation()
        weights = None
        if getattr(model, "decision", None) is not None:
            weights = model.decision.weights(relation).reshape(-1).cpu().tolist()
    main = "decision" if "decision" in outputs else next(iter(outputs))
    scores = outputs[main].clone()
    known = kg.filter_index.dense(head.cpu(), relation.cpu())[0]
    if args.filter_known:
        scores[known] = float("-inf")
    top = torch.topk(scores, min(args.top, kg.num_entities)).indices.tolist()
    others = [k for k in outputs if k != main]
    print(f"{args.head} --{kg.relation_label(int(relation))}--> ?   ({cfg.name}, ranked by '{main}'; "
          "scores are sigmoid probabilities)")
    if weights is not None:
        names = getattr(model.decision, "modalities", others)
        print("decision weights: " + ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)))
    header = f"{'rank':>4}  {'tail':<40} {main:>9} " + " ".join(f"{k:>9}" for k in others) + "  known"
    print(header)
    for rank, e in enumerate(top, 1):
        cells = " ".join(f"{torch.sigmoid(outputs[k][e]).item():9.4f}" for k in others)
        print(f"{rank:>4}  {kg.entity_names[e][:40]:<40} {torch.sigmoid(outputs[main][e]).item():9.4f} {cells}"
              f"  {'yes' if known[e] else ''}")
    return 0
