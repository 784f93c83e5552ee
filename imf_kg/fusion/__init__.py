"""First-stage multimodal fusion: a list of modality tensors ``(batch, d_m)`` -> one fused ``(batch, out_dim)``.

Every fusion module takes ``(in_dims, out_dim, ...)`` and exposes ``forward(list_of_tensors)`` and
``flops_per_row()``; :func:`build_fusion` picks one by name.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from imf_kg.fusion.concat import ConcatFusion
from imf_kg.fusion.contrastive import info_nce, reference_contrastive_loss
from imf_kg.fusion.reference_mutan import ReferenceMutanFusion
from imf_kg.fusion.tucker import TuckerFusion

FUSIONS = {"tucker": TuckerFusion, "concat": ConcatFusion, "mutan": ReferenceMutanFusion}


def build_fusion(name: str, in_dims: Sequence[int], out_dim: int, rank: int, latent_dim: int | None = None,
                 dropout: float = 0.0) -> nn.Module:
    """The fusion called ``name`` ("tucker", "concat" or "mutan"); ``rank``/``latent_dim`` are ignored where
    the fusion has no such setting (concat has neither, mutan has no latent_dim)."""
    if name == "tucker":
        return TuckerFusion(in_dims, out_dim, rank=rank, latent_dim=latent_dim, dropout=dropout)
    if name == "concat":
        return ConcatFusion(in_dims, out_dim, dropout=dropout)
    if name == "mutan":
        return ReferenceMutanFusion(in_dims, out_dim, rank=rank, dropout=dropout)
    raise ValueError(f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")


__all__ = [
    "ConcatFusion", "FUSIONS", "ReferenceMutanFusion", "TuckerFusion", "build_fusion", "info_nce",
    "reference_contrastive_loss",
]
