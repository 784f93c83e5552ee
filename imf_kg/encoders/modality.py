""":class:`EncodedModality`: what every encoder returns (one row per item, plus a presence mask)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from imf_kg.data.kg import EntityFeatures


@dataclass
class EncodedModality:
    """One modality encoded for ``n`` items (entities or nodes), rows in input order.

    Attributes:
        values: ``(n, dim)`` float32 tensor on the CPU; rows of items without the modality are zero.
        mask: ``(n,)`` bool tensor, True where the item has the modality.
        model: identity of the encoder (model folder or hub name, backbone and weights, or source file).
        details: how the features were made (pooling, max_length, cache file, ...), for reports.
    """

    values: torch.Tensor
    mask: torch.Tensor
    model: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.values, np.ndarray):
            values = self.values if self.values.flags.writeable else np.array(self.values)
            self.values = torch.from_numpy(values.astype(np.float32, copy=False))
        if isinstance(self.mask, np.ndarray):
            self.mask = torch.from_numpy(np.asarray(self.mask, dtype=bool))
        if self.values.ndim != 2 or self.mask.shape != (self.values.shape[0],):
            raise ValueError(f"values must be (n, dim) and mask (n,), got {tuple(self.values.shape)} and "
                             f"{tuple(self.mask.shape)}")

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def coverage(self) -> int:
        """Number of items that have this modality."""
        return int(self.mask.sum())

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def to_entity_features(self) -> EntityFeatures:
        """The :class:`~imf_kg.data.kg.EntityFeatures` stored in ``kg.features``."""
        return EntityFeatures(values=self.values, mask=self.mask, source=self.model)

    def state(self) -> dict:
        """A ``torch.save``-able dict (tensors and strings only, so ``weights_only`` loading works)."""
        return {"values": self.values, "mask": self.mask, "source": self.model,
                "details": {k: str(v) for k, v in self.details.items()}}
