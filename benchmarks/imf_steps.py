"""IMF training-step speed and memory with and without bf16 autocast, on any device (meant for a GPU).

Usage:
    python benchmarks/imf_steps.py --device cuda --data <FB15k-237 folder> \
        --text-features fb_text.npy --text-ids fb_text_ids.txt --json out.json

The model is the FB15k-237 config's (structure + text, d = d_r = 200, Tucker rank 400, batch 128, fused Adam),
built once per precision from the same seed, and trained for ``--steps`` timed steps after ``--warmup`` untimed
ones on the same batches, as ``imf-kg train`` does (autocast around the forward and loss, fp32 master weights,
no gradient scaler: bf16 keeps fp32's exponent range). Each step is timed from before ``zero_grad`` to after
``optimizer.step`` with a device synchronisation on both sides. Rows: precision, median step time, queries per
second, peak device memory of that phase, first and last loss; then the full filtered test evaluation (fp32, the
trainer's default ``amp_validation: false``) of the last model. The ratio bf16 / fp32 is measured in one process
on one device, so it is not affected by other machines' speed. Text features come from ``--text-features``
(a matrix with one row per name of ``--text-ids``, as ``data.features`` takes them) or, without it, are random
384-d (the output says which).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_speed, beside this file

from imf_kg.training.device import autocast, resolve_device  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FB15k-237-style folder (train.txt, valid.txt, test.txt)")
    parser.add_argument("--text-features", default=None, help=".npy with one row per name in --text-ids")
    parser.add_argument("--text-ids", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--fusion-rank", type=int, default=400)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True,
                        help="time the full filtered test evaluation after the last phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def load(args):
    from imf_kg.data import load_kg
    from imf_kg.data.kg import EntityFeatures
    from imf_kg.data.side_data import attach_features

    kg = load_kg(args.data, unseen="drop")
    if args.text_features:
        attach_features(kg, "text", args.text_features, args.text_ids)
        return kg, f"{args.text_features} ({int(kg.features['text'].mask.sum())} of {kg.num_entities} entities)"
    generator = torch.Generator().manual_seed(args.seed)
    values = torch.randn(kg.num_entities, 384, generator=generator)
    kg.features["text"] = EntityFeatures(values, torch.ones(kg.num_entities, dtype=torch.bool), "random")
    return kg, "RANDOM 384-d text features"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phase(kg, args, device, precision: str) -> tuple[dict, torch.nn.Module]:
    from imf_kg.training import OneToNTask
    from train_speed import build_model  # the same FB15k-237 model as the CPU speed benchmark

    model = build_model(kg, args, ("structure", "text")).to(device)
    task = OneToNTask(kg, model, batch_size=args.batch_size, label_smoothing=0.1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-4,
                                 fused=True)
    dtype = torch.bfloat16 if precision == "bf16" else None
    batches = iter(task.train_batches(1, torch.Generator().manual_seed(args.seed)))
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(rows) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss, _ = task.training_step(model, rows)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(args.warmup):
        step(next(batches))
    walls, losses = [], []
    for _ in range(args.steps):
        rows = next(batches)
        sync(device)
        started = time.perf_counter()
        losses.append(step(rows))
        sync(device)
        walls.append(time.perf_counter() - started)
    median = statistics.median(walls)
    row = {"precision": precision, "steps": len(walls), "median_step_ms": 1e3 * median,
           "queries_per_s": args.batch_size / median, "loss_first": float(losses[0]), "loss_last": float(losses[-1])}
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row, model


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    kg, text_source = load(args)
    rows, model = [], None
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        if precision not in ("fp32", "bf16"):
            raise SystemExit(f"--precisions: expected fp32 and/or bf16, found {precision!r}")
        model = None  # free the previous phase's model first: each phase's peak memory is its own
        row, model = time_phase(kg, args, device, precision)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "entities": kg.num_entities, "text": text_source,
              "batch_size": args.batch_size, "dim": args.dim, "fusion_rank": args.fusion_rank, "phases": rows}
    by = {r["precision"]: r for r in rows}
    if "fp32" in by and "bf16" in by:
        result["bf16_speedup"] = by["fp32"]["median_step_ms"] / by["bf16"]["median_step_ms"]
    if args.eval and model is not None:
        from imf_kg.evaluation import evaluate_link_prediction

        sync(device)
        started = time.perf_counter()
        metrics = evaluate_link_prediction(model, kg, "test", device=device, progress=False)
        sync(device)
        result["eval_test_s"] = time.perf_counter() - started
        result["eval_queries"] = 2 * len(kg.test)
        result["eval_outputs"] = sorted(metrics)
    print(json.dumps({k: v for k, v in result.items() if k != "phases"}), flush=True)
    if args.json:
        from imf_kg.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
