"""This machine's fp32 matrix-multiply rate with torch, the compute bound that evaluation is measured against.

Usage:
    python benchmarks/gemm_peak.py [--device cpu|cuda] [--seconds 1.0]

Prints GFLOP/s for square products (2048, 4096) and for the shapes of 1-N scoring,
``(batch, dim) @ (dim, num_entities)`` with FB15k-237's 14,541 entities and dim 200.
"""

from __future__ import annotations

import argparse
import time

import torch

SQUARE_SIZES = (2048, 4096)
SCORING_SHAPES = ((256, 200, 14541), (1024, 200, 14541), (4096, 200, 14541))  # (batch, dim, entities)


def measure_gemm_gflops(
    m: int = 2048, k: int = 2048, n: int = 2048, device: str | torch.device = "cpu", min_seconds: float = 1.0,
    dtype=torch.float32,
) -> float:
    """Best observed rate in GFLOP/s of ``(m, k) @ (k, n)`` (2*m*k*n flops per product), writing into a
    preallocated output; repeats for at least ``min_seconds`` and keeps the fastest third of the runs."""
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(m, k, generator=generator, dtype=dtype).to(device)
    b = torch.randn(k, n, generator=generator, dtype=dtype).to(device)
    out = torch.empty(m, n, dtype=dtype, device=device)
    torch.mm(a, b, out=out)  # warm-up: allocations, BLAS kernel selection
    _sync(device)
    timings = []
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds or len(timings) < 3:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        timings.append(time.perf_counter() - t0)
    timings.sort()
    fastest = timings[: max(1, len(timings) // 3)]
    return 2.0 * m * k * n / (sum(fastest) / len(fastest)) / 1e9


def measure_peak_gflops(device: str | torch.device = "cpu", min_seconds: float = 1.0) -> dict[str, float]:
    """Rates of all benchmark shapes: ``"m x k x n"`` -> GFLOP/s."""
    shapes = [(s, s, s) for s in SQUARE_SIZES] + list(SCORING_SHAPES)
    return {f"{m}x{k}x{n}": measure_gemm_gflops(m, k, n, device, min_seconds) for m, k, n in shapes}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timing per shape")
    args = parser.parse_args(argv)
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for shape, rate in measure_peak_gflops(args.device, args.seconds).items():
        print(f"  fp32 matmul {shape:>18}: {rate:8.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
