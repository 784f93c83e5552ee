"""Launching training subprocesses from tests: one environment, torchrun's command line, and a bounded wait."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """One thread per process, the repository (and this folder) importable, the model hub offline, no inherited
    torchrun rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),  # tests run parts of themselves
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """``(returncode, stdout, stderr)``; a process still running after ``timeout`` seconds is killed."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err
