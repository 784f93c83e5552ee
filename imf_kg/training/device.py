"""Device choice, mixed precision, seeding and the notion of a "main process".

Everything here is free of model code: models never name a device, the trainer resolves one here and moves
the model there.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from imf_kg.errors import ConfigError

AMP_MODES = ("auto", "bf16", "off")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a :class:`torch.device`) into a usable device.

    ``"auto"`` picks CUDA when it is available, else the CPU. Asking for CUDA on a machine without it, or
    for a GPU index that does not exist, raises :class:`~imf_kg.errors.ConfigError`.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {spec!r}")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {spec!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} was requested but CUDA is not available here; use 'auto' or 'cpu'")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device: {spec!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for full precision.

    ``"auto"`` is bf16 on CUDA devices that support it and off elsewhere (CPU bf16 autocast is slower than
    fp32 on most CPUs). ``"bf16"`` forces bf16 autocast, on the CPU too. bf16 keeps fp32's exponent range,
    so no gradient scaler is needed.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"amp: expected one of {', '.join(AMP_MODES)}, found {amp!r}")
    if amp == "off":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if amp == "bf16" and not supported:
            raise ConfigError(f"amp: 'bf16' was requested but {torch.cuda.get_device_name(device)} lacks bf16")
        return torch.bfloat16 if supported else None
    return torch.bfloat16 if amp == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``device`` (a no-op context when ``dtype`` is ``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = True, strict: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: the seed.
        deterministic: also choose deterministic kernels where that is cheap: cuDNN deterministic mode, no
            cuDNN autotuning, and a fixed cuBLAS workspace (only effective before cuBLAS is first used).
        strict: additionally call ``torch.use_deterministic_algorithms(True)``. Off by default because the
            deterministic scatter/index_add kernels that graph layers rely on are much slower on CUDA.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if strict:
        torch.use_deterministic_algorithms(True)


def is_main_process() -> bool:
    """True unless torch.distributed is initialised and this process is not rank 0.

    Only the main process writes checkpoints, metrics and plots, so the loop can later run under
    DistributedDataParallel without changes.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
