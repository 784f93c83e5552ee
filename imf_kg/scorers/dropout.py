"""Dropout with the distribution of ``torch.nn.functional.dropout`` and a mask that is cheaper to draw on the CPU.

Standard (inverted) dropout (Srivastava et al. 2014): every entry is kept independently with probability
``1 - p`` and scaled by ``1 / (1 - p)``, else zeroed.

Why not ``F.dropout`` on the CPU: it draws the mask with ``bernoulli_``, one double-precision Mersenne-Twister
draw and comparison per entry on a single thread. IMF's largest masks are the hidden dropout on the ``U``
distinct ``(d, d)`` context matrices (about 3.4M entries per scorer per FB15k-237 batch at d = 200) and the
fusion's input dropout on all ``N`` entities; ``bernoulli_`` on them was 20% of a structure-only training step
on the 2-core development machine, more than the relation contraction it follows. Here the random bits come
from numpy's SFC64 generator (``random_raw``: 64 raw bits per call, two draws; 3x cheaper than torch's
``random_``), and one comparison writes the float mask: 24 ms of CPU per 3.4M entries against 76 ms for
``bernoulli_`` and 108 ms for ``F.dropout`` (``benchmarks/_profile_notes.md``).

Distribution: each entry compares an independent 32-bit uniform integer with ``round((1 - p) 2^32)``, so the
keep probability is ``1 - p`` to within ``2^-33`` (``torch.rand``'s floats have 24 random bits). Each mask's
generator is seeded with a 63-bit number drawn from torch's default generator (or the one given), so
``torch.manual_seed`` reproduces the masks and the trainer's saved torch RNG state resumes them. SFC64 (Doty-
Humphrey's Small Fast Chaotic generator, one of numpy's bit generators) has a 64-bit counter in its state: a
period of at least 2^64 (about 2^255 expected) and no overlap between seeds for 2^64 draws (numpy's docs).
On other devices ``F.dropout`` is used as it is: its fused kernels are already fast there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_INT32 = 1 << 32
_SEED_BOUND = 1 << 63


def uniform_int32(numel: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(numel,)`` CPU int32 tensor of independent draws uniform on ``[-2^31, 2^31)`` (numpy SFC64 raw bits,
    seeded from torch's generator)."""
    seed = int(torch.randint(0, _SEED_BOUND - 1, (), generator=generator))
    raw = np.random.SFC64(seed).random_raw((numel + 1) // 2)
    return torch.from_numpy(raw.view(np.int32)[:numel])


def keep_mask(shape, p: float, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
              generator: torch.Generator | None = None, scaled: bool = True) -> torch.Tensor:
    """Dropout mask of ``shape`` (``0 <= p < 1``): each entry kept with probability ``1 - p``, where kept entries are
    ``1 / (1 - p)`` (``scaled``) or ``1`` (the caller then applies the scale, e.g. to a smaller factor of a
    product), dropped ones ``0``.

    A float mask rather than bools: on the CPU ``masked_fill_``/``where`` with a bool mask and bool-to-float
    casts run 2-4x slower than a float multiply; the comparison writes the floats directly (``out=``).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0:
        return torch.ones(shape, dtype=dtype, device=device)
    shape = torch.Size(shape)
    mask = torch.empty(shape, dtype=dtype, device=device)
    # a draw s uniform on [-2^31, 2^31) is kept when s < round((1 - p) 2^32) - 2^31: P = 1 - p to within 2^-33
    threshold = min(int(round((1.0 - p) * _INT32)), _INT32 - 1) - (_INT32 >> 1)
    if mask.device.type == "cpu":
        draws = uniform_int32(shape.numel(), generator).view(shape)
    else:
        draws = torch.empty(shape, dtype=torch.int64, device=device).random_(-(_INT32 >> 1), _INT32 >> 1,
                                                                             generator=generator)
    torch.lt(draws, threshold, out=mask)
    return mask.mul_(1.0 / (1.0 - p)) if scaled else mask


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask drawn by :func:`keep_mask` on the CPU (same distribution).

    Shapes: any ``x``; returns a tensor of the same shape (``x`` itself when not training or ``p == 0``).
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype, x.device)


def module_dropout(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an ``nn.Dropout`` module's ``p`` in its own train/eval mode, through :func:`dropout`."""
    return dropout(x, float(module.p), module.training)
