"""benchmarks/imf_steps.py and benchmarks/gpu_check.sh, run here on the CPU so that the GPU check does not rot
between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import imf_steps  # noqa: E402

TRIPLES = [("a", "r", "b"), ("b", "r", "c"), ("c", "s", "a"), ("a", "s", "d"), ("d", "r", "e"), ("e", "s", "b"),
           ("b", "s", "d"), ("c", "r", "e")]


def test_imf_steps_times_both_precisions_and_evaluates(tmp_path):
    folder = tmp_path / "kg"
    folder.mkdir()
    for name, rows in (("train.txt", TRIPLES), ("valid.txt", TRIPLES[:2]), ("test.txt", TRIPLES[2:5])):
        (folder / name).write_text("".join("\t".join(t) + "\n" for t in rows))
    np.save(tmp_path / "text.npy", np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\nc\nzzz\n")  # e has no text; zzz is not in the graph
    out = tmp_path / "steps.json"
    assert imf_steps.main(["--data", str(folder), "--text-features", str(tmp_path / "text.npy"), "--text-ids",
                           str(tmp_path / "ids.txt"), "--device", "cpu", "--steps", "2", "--warmup", "1",
                           "--batch-size", "4", "--dim", "8", "--fusion-rank", "8", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [p["precision"] for p in result["phases"]] == ["fp32", "bf16"]
    assert all(p["steps"] == 2 and math.isfinite(p["loss_last"]) and p["median_step_ms"] > 0 for p in result["phases"])
    assert result["bf16_speedup"] > 0 and result["eval_queries"] == 2 * 3 and "decision" in result["eval_outputs"]
    assert "3 of 5 entities" in result["text"]


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
