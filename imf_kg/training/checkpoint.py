"""Checkpoint files: what ``last.pt`` and ``best.pt`` hold, and the random-number state that makes resuming exact.

``last.pt`` holds everything needed to continue a run as if it had never stopped: model, optimiser and
scheduler states, every random-number generator (Python, NumPy, torch CPU, every CUDA device, and the
task's data-order generator), the epoch, the early-stopping state and the metric history. ``best.pt``
holds only the model's ``state_dict`` (load it with ``model.load_state_dict(torch.load(path))``);
``best.json`` beside it names its epoch and metrics. All are written atomically.

Everything stored is plain tensors, numbers, strings, lists and dicts, so the files load with
``torch.load(..., weights_only=True)``: opening a checkpoint never runs pickled code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imf_kg.errors import ToolkitError
from imf_kg.io import atomic_torch_save, atomic_write_json

CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"
BEST_INFO = "best.json"


class CheckpointError(ToolkitError):
    """A checkpoint is missing, unreadable, or does not fit the model/optimiser it is loaded into."""


def capture_rng_state(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random-number state the training loop draws from, as weights-only-loadable values."""
    version, mt_state, gauss = random.getstate()
    np_key, np_words, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "key": np_key,
            "words": torch.from_numpy(np.asarray(np_words, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`.

    CUDA states are restored only when the same number of devices is visible; otherwise GPU dropout masks
    differ from the uninterrupted run (everything else is still restored).
    """
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["key"], nps["words"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if data_generator is not None and "data" in state:
        data_generator.set_state(state["data"])


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files an atomic write leaves behind when its process is killed
    before the rename (they are never read; the previous complete file is still in place)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [path for path in folder.glob(".*.tmp") if path.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def save_last(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write the resumable checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    return atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(path: str | Path, map_location: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by this module (weights only: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; expected a file written by a previous training run")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged or foreign file
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({message}); expected a file written by Trainer"
        ) from None


def save_best(checkpoint_dir: str | Path, model_state: dict[str, torch.Tensor], epoch: int, metrics: dict) -> Path:
    """Write ``best.pt`` (the model ``state_dict`` only) and then ``best.json`` (its epoch and metrics)."""
    checkpoint_dir = Path(checkpoint_dir)
    path = atomic_torch_save(checkpoint_dir / BEST, model_state)
    atomic_write_json(checkpoint_dir / BEST_INFO, {"epoch": int(epoch), "metrics": metrics})
    return path


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (device-independent files, no aliasing with training)."""
    return {
        key: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value
        for key, value in module.state_dict().items()
    }
