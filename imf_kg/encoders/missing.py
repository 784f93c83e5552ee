"""Entity features with missing rows replaced by one learned missing-modality vector."""

from __future__ import annotations

import math

import torch
from torch import nn


class MaskedModalityEmbedding(nn.Module):
    """Look up a modality's features; items without the modality get one shared, learned vector.

    The reference IMF code fills missing image rows with the mean of the others, which tells the model that an
    entity looks "average". Here a dedicated vector (trained with the model) stands for "no image", and the
    mask travels with the embedding so fusion layers can also ignore the modality.

    Args:
        values: ``(N, d)`` features; rows where ``mask`` is False are ignored.
        mask: ``(N,)`` bool, True where the item has the modality.
        out_dim: when given, a ``Linear(d, out_dim)`` projects the looked-up rows (missing vector included).
        trainable: fine-tune the feature table itself (the reference code does; the paper freezes it).

    Shapes:
        ``forward(ids (B,))`` -> ``(embeddings (B, d'), mask (B,))`` with ``d' = out_dim or d``;
        ``forward(None)`` returns all ``N`` rows.
    """

    def __init__(self, values: torch.Tensor, mask: torch.Tensor, out_dim: int | None = None, trainable: bool = False):
        super().__init__()
        values = torch.as_tensor(values, dtype=torch.float32)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if values.ndim != 2 or mask.shape != (values.shape[0],):
            raise ValueError(f"values must be (N, d) and mask (N,), got {tuple(values.shape)} and {tuple(mask.shape)}")
        values = values.clone()
        if trainable:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values)
        self.register_buffer("mask", mask.clone())
        # start at the scale of the present rows so the missing vector is neither dominant nor negligible
        present = values[mask]
        scale = float(present.std()) if present.numel() > 1 else 1.0 / math.sqrt(values.shape[1])
        self.missing_vector = nn.Parameter(torch.randn(values.shape[1]) * (scale if scale > 0 else 1.0))
        self.projection = nn.Linear(values.shape[1], out_dim) if out_dim is not None else None

    @property
    def num_items(self) -> int:
        return int(self.values.shape[0])

    @property
    def out_dim(self) -> int:
        return self.projection.out_features if self.projection is not None else int(self.values.shape[1])

    def forward(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if ids is None:
            rows, present = self.values, self.mask
        else:
            rows, present = self.values[ids], self.mask[ids]
        embeddings = torch.where(present.unsqueeze(-1), rows, self.missing_vector.expand_as(rows))
        if self.projection is not None:
            embeddings = self.projection(embeddings)
        return embeddings, present

    def extra_repr(self) -> str:
        return (f"num_items={self.num_items}, dim={self.values.shape[1]}, out_dim={self.out_dim}, "
                f"coverage={int(self.mask.sum())}, trainable={isinstance(self.values, nn.Parameter)}")
