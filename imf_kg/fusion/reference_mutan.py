"""The published IMF code's fusion layer (``MutanLayer``, IMF_SPEC Sec. 4), kept for the "reference" variant.

For modality embeddings ``x^1 .. x^M`` and rank index ``rho = 1..P``:

    u^m_rho = ReLU(A^m_rho Dropout(x^m) + a^m_rho)          one Linear per (modality, rank)
    z       = ReLU(sum_rho u^1_rho * u^2_rho * ... * u^M_rho)

There is no output factor ``M_d`` (it is the identity) and the final ReLU has no effect, because every
factor is already non-negative; it is kept so that the layer computes what the published code computes.
Each (modality, rank) pair has its own dropout draw, as in the code. The published layer is written for
exactly three inputs of the same size; this one accepts any ``M >= 2`` and sizes ``d_m -> out_dim``
(``M = 3`` and ``d_m = out_dim = 256``, ``rank = 2``, ``dropout = 0.2`` reproduce it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from imf_kg.scorers.dropout import module_dropout


class ReferenceMutanFusion(nn.Module):
    """MUTAN rank-``P`` fusion as in the published IMF code (IMF_SPEC Sec. 4).

    Args:
        in_dims: ``[d_1, ..., d_M]``.
        out_dim: size of the fused embedding (the published code uses ``d_m = out_dim``).
        rank: ``P``, the number of Hadamard-product terms summed (2 in the code).
        dropout: dropout before each linear map (0.2 in the code).

    Shapes:
        forward: list of ``M`` tensors ``(batch, d_m)`` -> ``(batch, out_dim)``, non-negative.
        FLOPs per row: ``2 * P * sum(d_m) * out_dim``.
    """

    def __init__(self, in_dims: Sequence[int], out_dim: int, rank: int = 2, dropout: float = 0.2):
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        if len(self.in_dims) < 2:
            raise ValueError(f"ReferenceMutanFusion needs at least 2 modalities, got {len(self.in_dims)}")
        self.out_dim = int(out_dim)
        self.rank = int(rank)
        # branches[m][rho] = Dropout -> Linear -> ReLU, as in the published MutanLayer
        self.branches = nn.ModuleList(
            nn.ModuleList(
                nn.Sequential(nn.Dropout(dropout), nn.Linear(d, self.out_dim), nn.ReLU()) for _ in range(self.rank)
            )
            for d in self.in_dims
        )

    def reset_parameters(self) -> None:
        for per_modality in self.branches:
            for branch in per_modality:
                branch[1].reset_parameters()

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != len(self.in_dims):
            raise ValueError(f"expected {len(self.in_dims)} modality tensors, got {len(inputs)}")
        total = None
        for rho in range(self.rank):
            term = None
            for m, x in enumerate(inputs):
                u = _branch(self.branches[m][rho], x)
                term = u if term is None else term * u
            total = term if total is None else total + term
        return torch.relu(total)

    def modality_representations(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each modality's factors ``[u^m_1; ...; u^m_P]``, ``(batch, P * out_dim)`` (for a contrastive term; the
        published code never calls one)."""
        return [torch.cat([_branch(branch, x) for branch in self.branches[m]], dim=-1) for m, x in enumerate(inputs)]

    def flops_per_row(self) -> int:
        return 2 * self.rank * sum(self.in_dims) * self.out_dim

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, out_dim={self.out_dim}, rank={self.rank}"


def _branch(branch: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``ReLU(Linear(Dropout(x)))`` of one published MUTAN branch, the dropout mask drawn by
    :func:`~imf_kg.scorers.dropout.module_dropout` (same distribution, cheaper on the CPU)."""
    drop, linear, activation = branch
    return activation(linear(module_dropout(drop, x)))
