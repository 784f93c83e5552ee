"""Batch normalisation over the *global* batch of all data-parallel processes (CPU/gloo and CUDA/NCCL).

Under data parallelism every process sees only its shard of a global batch. A plain ``BatchNorm`` would then
normalise with per-shard statistics, so the update would differ from one process training on the whole
batch. :class:`GlobalBatchNorm` computes the statistics of the global batch instead (Ioffe & Szegedy 2015,
Algorithm 1, with the sums taken over every process) and back-propagates through them, so the forward pass,
the gradients and the running statistics equal those of one process with the same global batch.

``torch.nn.SyncBatchNorm`` does the same but only for GPU tensors; this module works on any device because it
is written with a differentiable all-reduce (:class:`_AllReduceSum`: its backward is an all-reduce of the
gradient, which is exactly the cross-process term of the batch-norm gradient), and autograd does the rest.

Statistics are two-pass: the global sum and count first, then the global sum of squared deviations, as a
single-process ``batch_norm`` does, which keeps the variance accurate for inputs with a large mean.

A process whose shard of the last global batch is empty trains on a zero-weight placeholder example so that it
joins every collective (see :mod:`imf_kg.training.distributed`); inside :func:`placeholder_step` its input
adds nothing to the statistics.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.distributed as dist
from torch import nn

_state = threading.local()


@contextlib.contextmanager
def placeholder_step(active: bool = True):
    """While active, :class:`GlobalBatchNorm` layers of this process contribute nothing to the statistics."""
    previous = getattr(_state, "placeholder", False)
    _state.placeholder = bool(active)
    try:
        yield
    finally:
        _state.placeholder = previous


def _in_placeholder_step() -> bool:
    return getattr(_state, "placeholder", False)


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over processes of x``; ``dL/dx = sum over processes of dL/dy`` (every process's loss uses ``y``)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad_output)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch over all processes.

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm1d/2d/3d``, so checkpoints move freely
    between single-process and data-parallel runs. In eval mode, or without a process group of more than one
    process, it is exactly the ordinary batch norm.

    Shapes: input ``(B, C)`` or ``(B, C, *)`` -> output of the same shape; statistics are per channel ``C``,
    over the batch (and spatial) dimensions of every process's input.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (batch, channels, ...) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() < 2:
            return super().forward(input)
        self._check_input_dim(input)
        all_reduce = _AllReduceSum.apply
        channels = input.shape[1]
        reduce_dims = [0] + list(range(2, input.dim()))
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.float()
        # a placeholder keeps its place in the autograd graph (times zero), so that the backward pass issues
        # the same all-reduces on every process; it only contributes zeros
        contribution = 0.0 if _in_placeholder_step() else 1.0
        count = torch.full((1,), contribution * (x.numel() // max(channels, 1)), dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(reduce_dims) * contribution, count]))
        total = sums[channels].clamp(min=1.0)
        mean = sums[:channels] / total
        centered = x - mean.view(shape)
        variance = all_reduce(centered.square().sum(reduce_dims) * contribution) / total
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), variance.detach(), float(total.detach()))
        return output.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, variance: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = variance * (count / (count - 1.0)) if count > 1 else variance  # as F.batch_norm stores
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def use_global_batch_norm(model: nn.Module) -> int:
    """Replace every batch-norm layer of ``model`` (in place) by a :class:`GlobalBatchNorm`; returns how many.

    The new layer takes over the *same* parameter and buffer objects, so an optimiser built over
    ``model.parameters()`` beforehand still updates them.
    """
    replaced = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            setattr(model, name, _converted(child))
            replaced += 1
        else:
            replaced += use_global_batch_norm(child)
    return replaced


def _converted(norm: nn.modules.batchnorm._BatchNorm) -> GlobalBatchNorm:
    new = GlobalBatchNorm(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    for name in ("weight", "bias"):
        setattr(new, name, getattr(norm, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(norm, name))
    new.train(norm.training)
    return new
