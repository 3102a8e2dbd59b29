"""Batch normalisation of feature maps with running statistics kept per task, mask or context.

Methods that keep per-task parameters keep per-task statistics too: each
holds a table of running means and variances and picks its row (or a mix of
rows); these helpers do the arithmetic they share, as ``nn.BatchNorm2d`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5


def per_channel(values: Tensor) -> Tensor:
    """Per-channel values ``[C]``, or per example ``[B, C]``, shaped ``[1 or B, C, 1, 1]`` for feature maps."""
    return (values if values.dim() == 2 else values[None])[:, :, None, None]


def batch_statistics(x: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """The batch's per-channel mean and variance; folds them into the running rows in place (variance unbiased)."""
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    with torch.no_grad():
        n = x.numel() / x.shape[1]
        running_mean.lerp_(mean.detach(), momentum)
        running_var.lerp_(var.detach() * n / max(n - 1, 1), momentum)
    return mean, var


def normalise(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return (x - per_channel(mean)) / torch.sqrt(per_channel(var) + EPS)
