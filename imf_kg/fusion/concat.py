"""Early-fusion ablation: concatenate the modality embeddings and project them linearly."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from imf_kg.scorers.dropout import module_dropout


class ConcatFusion(nn.Module):
    """``p = W [x_1; ...; x_M] + b``: the early-fusion baseline that IMF's Tucker fusion is compared with.

    Args:
        in_dims: ``[d_1, ..., d_M]``, the size of each modality embedding (``M >= 1``).
        out_dim: size of the fused embedding.
        dropout: dropout on the concatenated input, during training.

    Shapes:
        forward: list of ``M`` tensors ``(batch, d_m)`` -> ``(batch, out_dim)``.
        FLOPs per row: ``2 * sum(d_m) * out_dim``.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        if not self.in_dims:
            raise ValueError("ConcatFusion needs at least one modality")
        self.out_dim = int(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(self.in_dims), self.out_dim)

    def reset_parameters(self) -> None:
        self.projection.reset_parameters()

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != len(self.in_dims):
            raise ValueError(f"expected {len(self.in_dims)} modality tensors, got {len(inputs)}")
        return self.projection(module_dropout(self.dropout, torch.cat(list(inputs), dim=-1)))

    def modality_representations(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each modality's share of the projection, ``x_m W_m^T`` ``(batch, out_dim)``, where ``W = [W_1 .. W_M]``
        (the fused output is their sum plus the bias); IMF's contrastive term applies to these."""
        blocks = self.projection.weight.split(self.in_dims, dim=1)
        return [module_dropout(self.dropout, x) @ block.t() for x, block in zip(inputs, blocks)]

    def flops_per_row(self) -> int:
        return 2 * sum(self.in_dims) * self.out_dim

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, out_dim={self.out_dim}"
