"""Speed of our filtered evaluation against PyKEEN's RankBasedEvaluator and against the matmul compute bound.

Usage:
    python benchmarks/eval_speed.py                      # full FB15k-237 test, both directions (PyKEEN ~5 min)
    python benchmarks/eval_speed.py --max-queries 4000   # a quick subset
    python benchmarks/eval_speed.py --skip-pykeen --device cuda

Both evaluators rank the scores of one DistMult model, score = (e_h * w_r) @ E^T with dimension 200 and
seeded random embeddings. The embeddings are quantised (multiples of 1/8, see
``imf_kg.evaluation.pykeen_reference``) so the float32 scores are exact and bit-identical on both sides;
the check then requires identical per-query ranks and metrics equal to 1e-6 (relative for MR, which
PyKEEN averages in float32).

Reported: wall and CPU time of each evaluator (scoring included; CPU time is the steadier figure on a
shared machine), their ratios, the peak extra memory of each (host
RSS sampled every 2 ms, plus CUDA peak allocation on a GPU), our time against the compute bound
``2 * queries * num_entities * dim / measured fp32 GEMM rate`` and the part of our time spent outside
scoring (the same batches scored without ranking).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, PeakMemory, load_labelled_kg, mib  # noqa: E402
from gemm_peak import measure_gemm_gflops  # noqa: E402

from imf_kg.evaluation import batch_size_for_budget, evaluate_link_prediction  # noqa: E402
from imf_kg.evaluation.pykeen_reference import (  # noqa: E402
    compare_with_pykeen,
    distmult_score_fn,
    pykeen_filtered_metrics,
    quantised_random_embeddings,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "kg" / "FB15k-237"),
                        help="folder with train/valid/test.txt")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--unseen", default="keep", choices=("keep", "drop"),
                        help="valid/test triples with an entity unseen in train (FB15k-237 test has 28)")
    parser.add_argument("--max-queries", type=int, default=None,
                        help="evaluate the first max_queries/2 triples in both directions (default: all)")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-score-mib", type=float, default=None,
                        help="our memory budget per batch (default: the evaluator's default for the device)")
    parser.add_argument("--pykeen-batch-size", type=int, default=256)
    parser.add_argument("--skip-pykeen", action="store_true")
    parser.add_argument("--gemm-seconds", type=float, default=1.0, help="timing per GEMM shape")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    kg, how = load_labelled_kg(args.data, args.unseen)
    num_triples = len(kg.split(args.split))
    if args.max_queries is not None:
        num_triples = min(num_triples, max(1, args.max_queries // 2))
    n_split = len(kg.split(args.split))
    positions = torch.cat([torch.arange(num_triples), n_split + torch.arange(num_triples)])
    num_queries = len(positions)
    print(f"data {args.data} ({how}): {kg.num_entities} entities, {args.split} {n_split} triples")
    print(f"evaluating {num_queries} queries ({num_triples} triples x 2 directions), dim {args.dim}, "
          f"device {device}, torch threads {torch.get_num_threads()}, load average {_load()}")

    entities, relations = quantised_random_embeddings(kg.num_entities, kg.num_relations, args.dim, args.seed)
    score = distmult_score_fn(entities.to(device), relations.to(device))
    budget = int(args.max_score_mib * 2**20) if args.max_score_mib else None
    kg.filter_index  # built once, outside every timing (PyKEEN builds its own filter inside its timing)

    # warm-up on a few queries (BLAS kernels, allocator)
    evaluate_link_prediction(score, kg, args.split, device=device, progress=False,
                             restrict_to=positions[:64], max_score_bytes=budget)
    with PeakMemory(device) as ours_memory:
        start, start_cpu = time.perf_counter(), time.process_time()
        ours = evaluate_link_prediction(score, kg, args.split, device=device, progress=False,
                                        restrict_to=positions, max_score_bytes=budget, return_ranks=True)["model"]
        _sync(device)
        ours_seconds, ours_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    scoring_seconds, batch_size = _scoring_only(score, kg, args.split, positions, device, budget)

    rate = max(measure_gemm_gflops(b, args.dim, kg.num_entities, device, args.gemm_seconds) for b in (batch_size, 1024))
    flops = 2.0 * num_queries * kg.num_entities * args.dim
    bound = flops / (rate * 1e9)
    figures = {
        "queries": num_queries, "entities": kg.num_entities, "dim": args.dim, "device": str(device),
        "our_seconds": ours_seconds, "our_cpu_seconds": ours_cpu, "our_batch_size": batch_size, "scoring_only_seconds": scoring_seconds,
        "gemm_gflops": rate, "compute_bound_seconds": bound, "our_peak_rss_bytes": ours_memory.peak_rss_bytes,
        "our_peak_cuda_bytes": ours_memory.peak_cuda_bytes, "mrr": ours.mrr, "load_average": _load(),
    }
    print(f"ours:    {ours_seconds:8.2f} s wall, {ours_cpu:8.2f} s CPU (batch {batch_size}; "
          f"peak extra RSS {mib(ours_memory.peak_rss_bytes)}"
          + (f", CUDA {mib(ours_memory.peak_cuda_bytes)}" if device.type == "cuda" else "") + ")")
    print(f"  scoring alone (same batches, no ranking): {scoring_seconds:.2f} s -> ranking and filtering add "
          f"{ours_seconds - scoring_seconds:.2f} s ({ours_seconds / scoring_seconds:.2f}x scoring)")
    print(f"  compute bound: {flops / 1e9:.1f} GFLOP at {rate:.1f} GFLOP/s = {bound:.2f} s -> ours is "
          f"{ours_seconds / bound:.2f}x the bound (target <= 5x)")
    print(f"  realistic both: MRR {ours.mrr:.6f}, MR {ours.mr:.3f}, Hits@10 {ours.hits_at_k(10):.6f}")

    status = 0
    _save(args.json, figures)  # ours survives even if the PyKEEN run is interrupted
    if not args.skip_pykeen:
        with PeakMemory(device) as pykeen_memory:
            start_cpu = time.process_time()
            reference = pykeen_filtered_metrics(kg, args.split, entities, relations, args.pykeen_batch_size,
                                                device, max_triples=num_triples)
            pykeen_cpu = time.process_time() - start_cpu
        problems = compare_with_pykeen(ours, reference, tolerance=1e-6)
        figures.update(pykeen_seconds=reference.seconds, pykeen_cpu_seconds=pykeen_cpu,
                       speedup=reference.seconds / ours_seconds, cpu_speedup=pykeen_cpu / ours_cpu,
                       pykeen_peak_rss_bytes=pykeen_memory.peak_rss_bytes,
                       pykeen_peak_cuda_bytes=pykeen_memory.peak_cuda_bytes, identical=not problems,
                       load_average_after=_load())
        print(f"pykeen:  {reference.seconds:8.2f} s wall, {pykeen_cpu:8.2f} s CPU (batch {args.pykeen_batch_size}; "
              f"peak extra RSS "
              f"{mib(pykeen_memory.peak_rss_bytes)}" + (f", CUDA {mib(pykeen_memory.peak_cuda_bytes)}"
                                                         if device.type == "cuda" else "") + ")")
        print(f"speed-up: {reference.seconds / ours_seconds:.1f}x wall, {pykeen_cpu / ours_cpu:.1f}x CPU time "
              f"(target >= 10x); load average now {_load()}")
        if problems:
            status = 1
            print("METRICS DIFFER:")
            for line in problems[:20]:
                print("  " + line)
        else:
            print("metrics: identical (all rank types and sides to 1e-6; per-query ranks equal)")
    _save(args.json, figures)
    return status


def _save(path: str | None, figures: dict) -> None:
    if path:
        from imf_kg.io import atomic_write_json

        atomic_write_json(path, figures)


def _scoring_only(score, kg, split, positions, device, budget) -> tuple[float, int]:
    """Time the score function alone over the same batches the evaluator uses."""
    from imf_kg.evaluation.evaluator import DEFAULT_SCORE_BYTES

    budget = budget or DEFAULT_SCORE_BYTES.get(device.type, DEFAULT_SCORE_BYTES["cuda"])
    batch_size = batch_size_for_budget(budget, kg.num_entities)
    queries = kg.queries(split)[positions]
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(queries), batch_size):
            heads, relations, _ = queries[first : first + batch_size].unbind(1)
            score(heads.to(device), relations.to(device))
    _sync(device)
    return time.perf_counter() - start, batch_size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
