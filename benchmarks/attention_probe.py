"""Does a trained HGNN-IMA attend away from the planted misaligned neighbours?

The synthetic network (node_tasks.synthetic) plants distractor neighbours whose modalities disagree, and keeps
the truth at graph level (``data.planted[type]["distractor"]``). This script trains a model exactly as
``node-tasks compare`` does (same config, same selection on validation Macro-F1; the test split is never
evaluated), then, on the selected checkpoint, measures for every layer and every edge type that ends at the
target type how well each attention separates aligned from distractor neighbours: the ROC AUC of
"aligned" against the attention weight, for alpha (per-modality inter-node attention, averaged over modalities
and heads), b = sum_m lambda^m alpha^m (the cross-modal weight before alignment), gamma (alignment modulation) and
beta (the final attention that weights the messages).
0.5 = the attention ignores the cue; 1.0 = every aligned neighbour outweighs every distractor.

On the community design (``data.planted`` has ``community`` and ``deceptive_modality``) it adds, per modality m,
``auc_match_m``: the AUC of alpha^m (averaged over heads) for "the neighbour shows the target's community in
modality m" (an aligned neighbour of its community, or a distractor whose deceptive modality is m), over the
edges whose two ends both have m (alpha^m is 0 elsewhere by construction). This asks whether g^m has learned the
per-modality identity similarity that gamma compares. There, ``auc_<b|gamma|beta>_same`` and ``_other`` also split
the aligned neighbours into those of the target's community and those of another one, each against all distractors.

``--fit-match STEPS`` asks the question before it: can g^m represent that similarity at all? It trains a fresh
model of each ``--models`` entry on nothing but the planted match, for STEPS Adam steps: for every target and
modality m, minus the log of the alpha^m mass that layer 0 puts on matching neighbours. It prints the AUC of
alpha^m against the match as it goes. No labels are used, so no split is touched.

``--pretrain-match STEPS`` then asks whether the cue would pay if it were learned: every HGNN-IMA model is fitted
to the planted match that way first and only then trained on labels as ``compare`` trains it, and the usual rows
are printed. It starts from the planted truth, so it is a diagnostic, never a model to compare.

It also prints how fast the training set is fitted (training loss after 1, 5, 10 and 25 epochs): attention
can only learn from the loss while the loss still has something to say.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attention_probe.py --models ima,ima-product --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attention_probe.py --set data_options.communities=4 \\
        --set data_options.misalignment=0.5 --set data_options.homophily=0.9 --set data_options.identity_signal=3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imf_kg.io import atomic_write_json  # noqa: E402
from node_tasks.compare import load_dataset, resolve_config  # noqa: E402
from node_tasks.model import graph_inputs  # noqa: E402
from node_tasks.train import MODELS, build_model, train_selected  # noqa: E402

LOSS_EPOCHS = (1, 5, 10, 25)
FIT_REPORTS = 4  # --fit-match prints this many rows per run, evenly over its steps (and the first)


def attention_aucs(model, data) -> List[Dict]:
    """One row per (layer, edge type into the target type whose source type has planted distractors)."""
    x, edges, masks = graph_inputs(data)
    model.eval()
    with torch.no_grad():
        outputs = model(x, edges, masks, return_attention=True)
    if not outputs.attention:
        return []
    rows = []
    for layer, per_type in enumerate(outputs.attention):
        for edge_type, att in per_type.items():
            distractor = _edge_distractors(data, edge_type, edges[edge_type])
            if distractor is None:
                continue
            aligned = (~distractor).numpy()
            row = {"layer": layer, "edge_type": "/".join(edge_type), "distractor_share": float(distractor.float().mean())}
            cross = (att.inter_modal * att.inter_node).sum(0)  # b = sum_m lambda^m alpha^m, (E, H)
            weights = {"alpha": att.inter_node.mean(dim=(0, -1)), "b": cross.mean(-1), "gamma": att.alignment.mean(-1),
                       "beta": att.final.mean(-1)}
            for name, weight in weights.items():
                row[f"auc_{name}"] = float(roc_auc_score(aligned, weight.numpy()))
            same = _same_community(data, edge_type, edges[edge_type])
            if same is not None:  # community design: aligned authors of the target's community / of another one
                for part, kind in (("same", aligned & same), ("other", aligned & ~same)):
                    chosen = kind | ~aligned
                    if kind.any():
                        for name in ("b", "gamma", "beta"):
                            row[f"auc_{name}_{part}"] = float(roc_auc_score(kind[chosen], weights[name].numpy()[chosen]))
            active = _active_edges(masks, edge_type, edges[edge_type], att.modalities)
            for k, match in _modality_matches(data, edge_type, edges[edge_type], att.modalities).items():
                match, weights = match[active[k]], att.inter_node[k].mean(-1).numpy()[active[k]]
                if 0 < match.sum() < len(match):
                    row[f"auc_match_{att.modalities[k]}"] = float(roc_auc_score(match, weights))
            rows.append(row)
    return rows


def _edge_distractors(data, edge_type, edge_index):
    """Per edge, is the source a planted distractor; None for the edge types the probe skips: those not into the
    target type, and those without both aligned and distractor sources."""
    planted = getattr(data, "planted", {}).get(edge_type[0], {})
    if edge_type[2] != data.target_node_type or "distractor" not in planted:
        return None
    distractor = planted["distractor"][edge_index[0]]
    return None if distractor.all() or not distractor.any() else distractor


def _same_community(data, edge_type, edge_index):
    """Per edge, is the source in the target's community (planted truth); None outside the community design."""
    planted = getattr(data, "planted", {})
    source, target = planted.get(edge_type[0], {}), planted.get(edge_type[2], {})
    if "community" not in source or "community" not in target:
        return None
    return (source["community"][edge_index[0]] == target["community"][edge_index[1]]).numpy()


def _active_edges(masks, edge_type, edge_index, modalities) -> Dict[int, np.ndarray]:
    """Modality index k -> per edge, do both ends have modality k. alpha^m is 0 by construction on the other
    edges (masked out of the softmax), so they say nothing about what g^m has learned."""
    src_type, _, dst_type = edge_type
    src, dst = edge_index
    return {k: (masks[src_type][m].bool()[src] & masks[dst_type][m].bool()[dst]).numpy()
            for k, m in enumerate(modalities)}


def _modality_matches(data, edge_type, edge_index, modalities) -> Dict[int, np.ndarray]:
    """Modality index k -> per edge, does the source show the target's community in modality k (planted truth);
    empty outside the community design."""
    src_type, _, dst_type = edge_type
    planted = getattr(data, "planted", {})
    source, target = planted.get(src_type, {}), planted.get(dst_type, {})
    if "deceptive_modality" not in source or "community" not in target:
        return {}
    same = _same_community(data, edge_type, edge_index)
    deceptive = source["deceptive_modality"][edge_index[0]].numpy()
    names = list(data.modalities)
    return {k: same & ((deceptive < 0) | (deceptive == names.index(m))) for k, m in enumerate(modalities)}


def fit_match(model, data, steps: int, lr: float = 0.002, report_every: int = 25) -> List[Dict]:
    """Train ``model`` (an HGNN-IMA) on the planted per-modality identity match only (module docstring,
    ``--fit-match``). Returns one row per report and edge type (those into the target type from a type with
    planted distractors, as :func:`attention_aucs` probes): step, edge type, the layer-0 ``auc_match_<m>`` over
    the edges whose ends both have m, and the loss. Raises ValueError outside the community design."""
    x, edges, masks = graph_inputs(data)
    target_type = data.target_node_type
    num_targets = data[target_type].num_nodes
    targets = {}  # edge type -> (active edges per modality, matching active edges per modality, targets with a match)
    with torch.no_grad():  # the modalities each edge type's attention runs over (both ends may have them)
        first = model(x, edges, masks, return_attention=True).attention[0]
    for edge_type, att in first.items():
        if _edge_distractors(data, edge_type, edges[edge_type]) is None:  # the edge types attention_aucs probes
            continue
        matches = _modality_matches(data, edge_type, edges[edge_type], att.modalities)
        if matches:
            active = _active_edges(masks, edge_type, edges[edge_type], att.modalities)
            match = {k: torch.as_tensor(matches[k] & active[k]).float() for k in matches}
            has = {k: torch.zeros(num_targets).index_add(0, edges[edge_type][1], m) > 0 for k, m in match.items()}
            targets[edge_type] = (active, match, has)
    if not targets:
        raise ValueError("fit_match needs the community design (make_synthetic(communities=K)): no planted match")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rows = []
    model.train()
    for step in range(steps + 1):
        attention = model(x, edges, masks, return_attention=True).attention[0]
        loss = torch.zeros(())
        for edge_type, (_, match, has) in targets.items():
            for k, matching in match.items():
                alpha = attention[edge_type].inter_node[k].mean(-1)
                mass = torch.zeros(num_targets).index_add(0, edges[edge_type][1], alpha * matching)
                loss = loss - torch.log(mass[has[k]].clamp(min=1e-12)).mean()
        if step % report_every == 0 or step == steps:
            for edge_type, (active, match, _) in targets.items():
                att = attention[edge_type]
                row = {"step": step, "edge_type": "/".join(edge_type)}
                for k, matching in match.items():
                    truth, alpha = matching.numpy()[active[k]], att.inter_node[k].mean(-1).detach().numpy()[active[k]]
                    if 0 < truth.sum() < len(truth):
                        row[f"auc_match_{att.modalities[k]}"] = float(roc_auc_score(truth, alpha))
                rows.append({**row, "loss": loss.item()})
        if step < steps:
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="experiment config (default configs/hgnn_ima/synthetic.yaml)")
    parser.add_argument("--models", default="ima,ima-product", help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--seeds", type=int, default=1, help="model seeds 0..N-1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--fit-match", type=int, default=0, metavar="STEPS",
                        help="instead of training on labels: fit layer 0's alpha^m to the planted identity match")
    parser.add_argument("--pretrain-match", type=int, default=0, metavar="STEPS",
                        help="fit every HGNN-IMA model to the planted match for STEPS steps before training on labels")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = resolve_config("synthetic", args.config, args.set)
    data = load_dataset(config.dataset, config.data_options)
    rows = []
    if args.fit_match:
        for name in args.models.split(","):
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model, _ = build_model(name, data, replace(config.model, name=name))
                for row in fit_match(model, data, args.fit_match, report_every=max(args.fit_match // FIT_REPORTS, 1)):
                    rows.append({"model": name, "seed": seed, **row})
                    print("  ".join(f"{k}={_fmt(v)}" for k, v in rows[-1].items()), flush=True)
        if args.out:
            atomic_write_json(args.out, rows)
        return 0
    with tempfile.TemporaryDirectory(prefix="attention-probe-") as scratch:
        for name in args.models.split(","):
            run_config = replace(config, model=replace(config.model, name=name))
            for seed in range(args.seeds):
                prepare = None
                if args.pretrain_match and MODELS[name][0] == "ima":
                    def prepare(model, steps=args.pretrain_match):
                        fit_match(model, data, steps, report_every=steps)
                trained = train_selected(run_config, data, Path(scratch) / name / str(seed), seed=seed, draw_curve=False,
                                         prepare=prepare)
                history = {r["epoch"]: r["train_loss"] for r in trained.result.history}
                losses = {f"train_loss@{e}": history[e] for e in LOSS_EPOCHS if e in history}
                head = {"model": name, "seed": seed, **({"pretrain_match": args.pretrain_match} if prepare else {}),
                        "best_epoch": trained.result.best_epoch,
                        "val_macro_f1": trained.result.best_metrics.get("macro_f1"), **losses}
                probes = attention_aucs(trained.model, data) or [{}]
                for probe in probes:
                    rows.append({**head, **probe})
                    print("  ".join(f"{k}={_fmt(v)}" for k, v in rows[-1].items()), flush=True)
    if args.out:
        atomic_write_json(args.out, rows)
    return 0


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
