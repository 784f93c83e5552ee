"""IMF training and evaluation speed on FB15k-237 on the CPU, against the matmul rate and PyKEEN's TuckER.

Usage:
    python benchmarks/train_speed.py --threads 2                    # all parts (PyKEEN steps take seconds each)
    python benchmarks/train_speed.py --threads 1 --random-text      # 384-d random text features, no MiniLM
    python benchmarks/train_speed.py --parts structure,pykeen --max-batches 10 --profile

Parts (``--parts``):

* ``imf``: IMF (structure + text, FB15k-237 config: d = d_r = 200, Tucker fusion rank 400, contrastive 0.1)
  training steps: labels, forward, backward, optimiser step. Text features are MiniLM encodings of
  ``entity_text.tsv`` through :func:`imf_kg.experiment.prepare_data` (cached after the first run), or random
  384-d features with ``--random-text`` (same cost; the output says which).
* ``structure``: the structure-only 1-N TuckER-form model (IMF with ``modalities=[structure]``), same steps.
* ``pykeen``: PyKEEN's ``TuckER`` with its ``LCWATrainingLoop`` at the same dimensions, batch size, label
  smoothing and optimiser on the same queries (FB15k-237 train triples with inverses as a ``TriplesFactory``),
  each step timed from one batch start to the next (data loading included, as ours includes building labels).
* ``eval``: filtered evaluation of the IMF model on test queries with ``evaluate_link_prediction``; the fused
  candidates (and every relation's context matrix) are computed once per evaluation, which is checked by
  counting the fusion's calls; then again with the matrix cache off. The compute bound is the cached
  algorithm's FLOPs at the GEMM rate (for a few hundred queries, contracting each batch's relations needs fewer).

FLOPs are matrix-product FLOPs (2 per multiply-add, as ``FlopCounterMode`` counts) from the model's own
``IMF.flops`` for the batch's distinct relations. Training counts forward + backward = 3 x forward for the
scorers (every product there needs both gradients) and, for the candidates (feature projection and fusion of all
N entities, whose inputs are frozen or detached), forward + the backward FLOPs counted once with
``FlopCounterMode``; the contrastive term's small products (distinct heads x fusion rank) are not counted. The
default optimiser is ``Adam(fused=True)``, which ``imf_kg.experiment.build_optimizer`` also builds; ``--optimizer
adam`` is the plain ``Adam``, whose per-tensor loop was 22-37% of a structure-only step. The matmul rate is
``measure_gemm_gflops()`` (fp32 2048^3, best third of the runs), measured in the same run before and after the
timings, at the same thread count; the larger is used. Step rates use the median step time and, for a
like-for-like comparison with the GEMM figure, the mean of the fastest third.

On a shared machine the share of the cores a process gets changes within seconds, so each timed step is also
followed by two timed 2048^3 products (the faster counts), and the "paired" fraction is the median over steps of
(step rate / that product's rate), in wall time and in CPU time (``time.process_time``: time the process actually
ran; with one thread it removes other processes' time slices, though not hyper-threading or turbo effects).
The optimiser step's share of the step time is printed too, with the fraction of the step without it.
Nothing here asserts a timing: the machine is shared; the load average is printed with every number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA  # noqa: E402
from gemm_peak import measure_gemm_gflops  # noqa: E402

PARTS = ("imf", "structure", "pykeen", "eval")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "kg" / "FB15k-237"))
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--max-batches", type=int, default=12, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--pykeen-batches", type=int, default=4, help="timed PyKEEN steps (about 2 s each alone)")
    parser.add_argument("--dim", type=int, default=200, help="entity and relation dimension")
    parser.add_argument("--fusion-rank", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--random-text", action="store_true", help="random 384-d text features instead of MiniLM")
    parser.add_argument("--optimizer", default="adam-fused", choices=("adam", "adam-fused"),
                        help="torch.optim.Adam, plain or fused=True (one vectorised pass; same update)")
    parser.add_argument("--malloc-tuning", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc mallopt: keep freed memory (no mmap/munmap per step), as the imf-kg and "
                             "node-tasks commands do (imf_kg/training/memory.py); --no-malloc-tuning to compare")
    parser.add_argument("--eval-queries", type=int, default=2000, help="test queries evaluated (0: all)")
    parser.add_argument("--gemm-seconds", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of 3 steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; expected some of {list(PARTS)}")
    return args


def gemm_cpu_gflops(size: int = 2048, min_seconds: float = 2.0) -> float:
    """fp32 ``size^3`` matmul rate per second of this process's CPU time (best third): on a shared machine this
    does not count the time other processes hold the cores, so it pairs with the steps' CPU time."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    timings, started = [], time.perf_counter()
    while time.perf_counter() - started < min_seconds or len(timings) < 3:
        cpu = time.process_time()
        torch.mm(a, b, out=out)
        timings.append(time.process_time() - cpu)
    fastest = sorted(timings)[: max(1, len(timings) // 3)]
    return 2.0 * size**3 / (sum(fastest) / len(fastest)) / 1e9


def tune_malloc() -> bool:
    """glibc keeps freed memory (no mmap/munmap per large tensor): :func:`imf_kg.training.memory.keep_freed_memory`,
    which the ``imf-kg`` and ``node-tasks`` commands apply by default."""
    from imf_kg.training.memory import keep_freed_memory

    return keep_freed_memory()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------------------------ data
def load_data(args):
    """FB15k-237 with text features: ``(kg, text_source)``."""
    from imf_kg.data import load_kg
    from imf_kg.data.kg import EntityFeatures

    if args.random_text:
        kg = load_kg(args.data, unseen="drop")
        generator = torch.Generator().manual_seed(args.seed)
        values = torch.randn(kg.num_entities, 384, generator=generator)
        kg.features["text"] = EntityFeatures(values, torch.ones(kg.num_entities, dtype=torch.bool), "random")
        return kg, "RANDOM 384-d text features (--random-text), not MiniLM encodings"
    from imf_kg.experiment import DataConfig, ExperimentConfig, prepare_data
    from imf_kg.models.imf import IMFConfig

    cfg = ExperimentConfig(data=DataConfig(dataset=args.data, text="entity_text"),
                           model=IMFConfig(modalities=("structure", "text")))
    start = time.perf_counter()
    kg = prepare_data(cfg, device="cpu", progress=False)
    return kg, f"MiniLM encodings of entity_text.tsv via prepare_data ({time.perf_counter() - start:.0f} s incl. cache)"


def build_model(kg, args, modalities):
    from imf_kg.models.imf import IMF, IMFConfig

    torch.manual_seed(args.seed)
    config = IMFConfig(modalities=tuple(modalities), entity_dim=args.dim, relation_dim=args.dim,
                       fusion_rank=args.fusion_rank, scorer_dropouts=(0.3, 0.4, 0.5), contrastive_weight=0.1)
    return IMF.from_kg(kg, config)


def make_optimizer(params, args):
    params = [p for p in params if p.requires_grad]
    return torch.optim.Adam(params, lr=5e-4, fused=args.optimizer == "adam-fused")


# -------------------------------------------------------------------------------------------------- training
def candidate_backward_flops(model) -> int:
    """Backward FLOPs of all entities' candidate embeddings (projections, fusion), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    outputs = model.candidate_embeddings()
    total = sum(v.sum() for v in outputs.values() if v.requires_grad and v.grad_fn is not None)
    if not isinstance(total, torch.Tensor):
        return 0
    with FlopCounterMode(display=False) as counter:
        total.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def training_flops(model, batch: int, unique_relations: int, candidate_backward: int) -> int:
    """Forward + backward matrix-product FLOPs of one training step (see the module docstring)."""
    forward = model.flops(batch, unique_relations)
    scorers = model.flops(batch, unique_relations, cached_candidates=True)
    return 3 * scorers + (forward - scorers) + candidate_backward


def time_training(model, kg, args, label: str) -> dict:
    from imf_kg.training import OneToNTask

    task = OneToNTask(kg, model, batch_size=args.batch_size, label_smoothing=0.1)
    optimizer = make_optimizer(model.parameters(), args)
    candidate_backward = candidate_backward_flops(model)
    model.train()
    generator = torch.Generator().manual_seed(args.seed)
    batches = iter(task.train_batches(1, generator))

    optimizer_walls = []

    def step(rows):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = task.training_step(model, rows)
        loss.backward()
        started = time.perf_counter()
        optimizer.step()
        optimizer_walls.append(time.perf_counter() - started)
        return float(loss.detach())

    for _ in range(args.warmup):
        step(next(batches))
    walls, cpus, flops, losses, paired = [], [], [], [], []
    gemm = _PairedGemm()
    for _ in range(args.max_batches):
        rows = next(batches)
        unique = len(torch.unique(task.queries[rows][:, 1]))
        wall, cpu = time.perf_counter(), time.process_time()
        losses.append(step(rows))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        flops.append(training_flops(model, len(rows), unique, candidate_backward))
        gemm_wall, gemm_cpu = gemm.rates()  # right after the step: the same share of the shared machine
        paired.append((flops[-1] / walls[-1] / 1e9 / gemm_wall, flops[-1] / cpus[-1] / 1e9 / gemm_cpu,
                       flops[-1] / (walls[-1] - optimizer_walls[-1]) / 1e9 / gemm_wall))
    result = _rates(walls, cpus, flops, args.batch_size)
    result["paired_fraction_wall"] = statistics.median(p[0] for p in paired)
    result["paired_fraction_cpu"] = statistics.median(p[1] for p in paired)
    result["paired_fraction_without_optimizer"] = statistics.median(p[2] for p in paired)
    result["optimizer_share"] = sum(optimizer_walls[-len(walls):]) / sum(walls)
    result.update(model=label, loss_first=losses[0], loss_last=losses[-1], load_average=load())
    if args.profile:
        result["profile"] = _profile(lambda: step(next(batches)))
    return result


class _PairedGemm:
    """One fp32 2048^3 product timed right after each training step: its rate, wall and per CPU-second, is the
    peak to compare that step with (the load on a shared machine changes within seconds)."""

    def __init__(self, size: int = 2048):
        self.a, self.b, self.out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
        self.flops = 2.0 * size**3
        torch.mm(self.a, self.b, out=self.out)

    def rates(self, repeats: int = 2) -> tuple[float, float]:
        """The faster of ``repeats`` products (the first after a step runs on cold caches)."""
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            torch.mm(self.a, self.b, out=self.out)
            best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
        return self.flops / best_wall / 1e9, self.flops / max(best_cpu, 1e-9) / 1e9


def _rates(walls, cpus, flops, batch_size) -> dict:
    median = statistics.median(walls)
    order = sorted(range(len(walls)), key=walls.__getitem__)[: max(1, len(walls) // 3)]
    fastest = sum(walls[i] for i in order) / len(order)
    mean_flops = sum(flops) / len(flops)
    return {
        "steps": len(walls), "median_step_s": median, "fastest_third_step_s": fastest,
        "cpu_step_s": statistics.median(cpus), "queries_per_s": batch_size / median,
        "queries_per_cpu_s": batch_size / statistics.median(cpus),
        "gflop_per_step": mean_flops / 1e9, "gflops_median": mean_flops / median / 1e9,
        "gflops_fastest_third": sum(flops[i] for i in order) / len(order) / fastest / 1e9,
        "gflops_per_cpu_s": sum(flops) / sum(cpus) / 1e9,
    }


def _profile(run_step, steps: int = 3) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run_step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


# ---------------------------------------------------------------------------------------------------- PyKEEN
class _StopTiming(Exception):
    pass


def time_pykeen(kg, args) -> dict:
    """PyKEEN TuckER (LCWA) steps on the same queries: time from one batch start to the next."""
    from pykeen.models import TuckER
    from pykeen.training import LCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory(mapped_triples=kg.split("train"), entity_to_id=kg.entity_to_id,
                             relation_to_id=kg.relation_to_id, create_inverse_triples=True)
    torch.manual_seed(args.seed)
    model = TuckER(triples_factory=factory, embedding_dim=args.dim, relation_dim=args.dim,
                   dropout_0=0.3, dropout_1=0.4, dropout_2=0.5, apply_batch_normalization=True,
                   random_seed=args.seed)
    optimizer = make_optimizer(model.parameters(), args)
    starts: list[tuple[float, float]] = []
    total = args.warmup + args.pykeen_batches + 1

    class Clock(TrainingCallback):
        def pre_batch(self, **kwargs):
            starts.append((time.perf_counter(), time.process_time()))
            if len(starts) >= total:
                raise _StopTiming

    loop = LCWATrainingLoop(model=model, triples_factory=factory, optimizer=optimizer)
    try:
        loop.train(triples_factory=factory, num_epochs=1, batch_size=args.batch_size, label_smoothing=0.1,
                   use_tqdm=False, use_tqdm_batch=False, callbacks=Clock(), num_workers=0, pin_memory=False)
    except _StopTiming:
        pass
    walls = [b[0] - a[0] for a, b in zip(starts, starts[1:])][args.warmup:]
    cpus = [b[1] - a[1] for a, b in zip(starts, starts[1:])][args.warmup:]
    result = _rates(walls, cpus, [0] * len(walls), args.batch_size)
    result.update(model="pykeen TuckER (LCWA)", load_average=load())
    for key in ("gflop_per_step", "gflops_median", "gflops_fastest_third", "gflops_per_cpu_s"):
        result.pop(key)
    return result


# ------------------------------------------------------------------------------------------------ evaluation
def time_evaluation(model, kg, args, cache_matrices: bool) -> dict:
    """Filtered test evaluation of ``model``: queries/s, fusion calls, time against the compute bound."""
    from imf_kg.evaluation import evaluate_link_prediction

    fused_rows = []
    hook = (model.entity_fusion.register_forward_hook(lambda m, a, o: fused_rows.append(a[0][0].shape[0]))
            if model.entity_fusion is not None else None)
    model.relation_matrix_cache_bytes = 256 * 2**20 if cache_matrices else 0
    num_queries = len(kg.queries("test"))
    count = num_queries if args.eval_queries <= 0 else min(args.eval_queries, num_queries)
    positions = torch.randperm(num_queries, generator=torch.Generator().manual_seed(args.seed))[:count]
    positions = positions.sort().values
    evaluate_link_prediction(model, kg, "test", progress=False, restrict_to=positions[:64])  # warm-up
    fused_rows.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate_link_prediction(model, kg, "test", progress=False, restrict_to=positions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if hook is not None:
        hook.remove()
    # compute bound: the FLOPs of the cheapest algorithm (every relation's matrix contracted once; then the
    # per-batch FLOPs do not depend on the batch's relations), whether or not this run cached the matrices
    model.relation_matrix_cache_bytes = 256 * 2**20
    per_query = setup = None
    if hasattr(model, "prepare_evaluation_flops"):  # absent in the code before this benchmark (baseline runs)
        model.prepare_evaluation()
        per_query = model.flops(len(positions), 1, cached_candidates=True)
        setup = model.prepare_evaluation_flops(cache_relation_matrices=True)
        model.end_evaluation()
    return {
        "queries": count, "seconds": wall, "cpu_seconds": cpu, "queries_per_s": count / wall,
        "fusion_calls_rows": sum(fused_rows), "fusion_row_count_expected": kg.num_entities,
        "flops": per_query + setup if setup is not None else None, "setup_flops": setup,
        "relation_matrices_cached": cache_matrices,
        "mrr_decision": float(result["decision"].mrr) if "decision" in result else None, "load_average": load(),
    }


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = tune_malloc() if args.malloc_tuning else False
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, optimizer {args.optimizer}, "
          f"malloc tuning {malloc}, dim {args.dim}, batch {args.batch_size}, load average {load()}")
    kg, text_source = load_data(args) if {"imf", "eval"} & set(args.parts) else (None, None)
    if kg is None:
        from imf_kg.data import load_kg

        kg = load_kg(args.data, unseen="drop")
    print(f"data {args.data}: {kg.num_entities} entities, {kg.num_relations} relations, "
          f"{len(kg.split('train'))} train triples" + (f"; text: {text_source}" if text_source else ""))
    peak_before = measure_gemm_gflops(min_seconds=args.gemm_seconds)
    cpu_peak_before = gemm_cpu_gflops(min_seconds=args.gemm_seconds)
    print(f"matmul rate before (fp32 2048^3, {args.threads} threads): {peak_before:.1f} GFLOP/s wall, "
          f"{cpu_peak_before:.1f} GFLOP per CPU-second; load {load()}")
    figures = {"threads": args.threads, "malloc_tuning": malloc, "optimizer": args.optimizer, "text": text_source,
               "gemm_gflops_before": peak_before, "gemm_cpu_gflops_before": cpu_peak_before, "runs": {}}

    trained = {}
    for part, modalities in (("imf", ("structure", "text")), ("structure", ("structure",))):
        if part not in args.parts:
            continue
        model = build_model(kg, args, modalities)
        figures["runs"][part] = run = time_training(model, kg, args, f"IMF {'+'.join(modalities)}")
        trained[part] = model
        _print_training(part, run)
        if "profile" in run:
            print(run.pop("profile"))
    if "pykeen" in args.parts:
        figures["runs"]["pykeen"] = run = time_pykeen(kg, args)
        print(f"[pykeen] TuckER LCWA: median step {run['median_step_s']:.3f} s (CPU {run['cpu_step_s']:.3f} s), "
              f"{run['queries_per_s']:.1f} queries/s ({run['steps']} steps; load {run['load_average']})")
    if "eval" in args.parts:
        model = trained.get("imf") or build_model(kg, args, ("structure", "text"))
        for cached in (True, False):
            figures["runs"][f"eval_cached_matrices={cached}"] = run = time_evaluation(model, kg, args, cached)
            _print_eval(run)

    peak_after = measure_gemm_gflops(min_seconds=args.gemm_seconds)
    cpu_peak_after = gemm_cpu_gflops(min_seconds=args.gemm_seconds)
    peak, cpu_peak = max(peak_before, peak_after), max(cpu_peak_before, cpu_peak_after)
    figures.update(gemm_gflops_after=peak_after, gemm_gflops=peak, gemm_cpu_gflops_after=cpu_peak_after,
                   gemm_cpu_gflops=cpu_peak, load_average_end=load())
    print(f"\nmatmul rate after: {peak_after:.1f} GFLOP/s wall, {cpu_peak_after:.1f} per CPU-second -> using "
          f"{peak:.1f} and {cpu_peak:.1f}; load {load()}")
    _summary(figures, peak, cpu_peak)
    if args.json:
        from imf_kg.io import atomic_write_json

        atomic_write_json(args.json, figures)
    return 0


def _print_training(part: str, run: dict) -> None:
    print(f"[{part}] {run['model']}: median step {run['median_step_s']:.3f} s (fastest third "
          f"{run['fastest_third_step_s']:.3f} s, CPU {run['cpu_step_s']:.3f} s), {run['queries_per_s']:.1f} queries/s, "
          f"{run['gflop_per_step']:.2f} GFLOP/step -> {run['gflops_median']:.1f} GFLOP/s median, "
          f"{run['gflops_fastest_third']:.1f} fastest third, {run['gflops_per_cpu_s']:.1f} per CPU-second; loss "
          f"{run['loss_first']:.4f} -> {run['loss_last']:.4f} ({run['steps']} steps; load {run['load_average']})")


def _print_eval(run: dict) -> None:
    flops = (f"{run['flops'] / 1e9:.1f} GFLOP needed ({run['setup_flops'] / 1e9:.1f} once per evaluation)"
             if run["flops"] is not None else "FLOPs unknown")
    print(f"[eval] IMF structure+text, relation matrices cached={run['relation_matrices_cached']}: "
          f"{run['queries']} test queries in {run['seconds']:.2f} s ({run['queries_per_s']:.0f} queries/s, CPU "
          f"{run['cpu_seconds']:.2f} s), {flops}; the fusion fused {run['fusion_calls_rows']} rows (all entities "
          f"once = {run['fusion_row_count_expected']}); load {run['load_average']}")


def _summary(figures: dict, peak: float, cpu_peak: float) -> None:
    runs = figures["runs"]
    print("summary (fraction of the matmul rate; target >= 0.50):")
    for part in ("imf", "structure"):
        if part in runs:
            run = runs[part]
            run["fraction_median"] = run["gflops_median"] / peak
            run["fraction_fastest_third"] = run["gflops_fastest_third"] / peak
            run["fraction_cpu_time"] = run["gflops_per_cpu_s"] / cpu_peak
            print(f"  {part:9s}: {run['paired_fraction_wall']:.2f} paired with a GEMM after each step (median; "
                  f"{run['paired_fraction_cpu']:.2f} in CPU time; {run['paired_fraction_without_optimizer']:.2f} "
                  f"without the optimizer step, {run['optimizer_share']:.0%} of the time); against the run's best "
                  f"GEMM rate "
                  f"{run['fraction_median']:.2f} (median step), {run['fraction_fastest_third']:.2f} (fastest third), "
                  f"{run['fraction_cpu_time']:.2f} (per CPU-second); {run['queries_per_s']:.1f} queries/s wall, "
                  f"{run['queries_per_cpu_s']:.1f} per CPU-second")
    if "structure" in runs and "pykeen" in runs:
        ratio = runs["structure"]["queries_per_s"] / runs["pykeen"]["queries_per_s"]
        cpu_ratio = runs["structure"]["queries_per_cpu_s"] / runs["pykeen"]["queries_per_cpu_s"]
        figures.update(throughput_ratio_vs_pykeen=ratio, cpu_throughput_ratio_vs_pykeen=cpu_ratio)
        print(f"  structure-only vs PyKEEN TuckER throughput: {ratio:.1f}x wall, {cpu_ratio:.1f}x per CPU-second "
              f"(target >= 15x)")
    for key, run in runs.items():
        if key.startswith("eval") and run["flops"] is not None:
            bound = run["flops"] / (peak * 1e9)
            run["compute_bound_s"] = bound
            print(f"  {key}: {run['seconds']:.2f} s = {run['seconds'] / bound:.2f}x the compute bound {bound:.2f} s, "
                  f"{run['queries_per_s']:.0f} queries/s")


if __name__ == "__main__":
    raise SystemExit(main())
