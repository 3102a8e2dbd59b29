"""RotatedMNIST: task i is MNIST rotated counter-clockwise by i * 10 degrees, 36 tasks (SupSup sec. 4.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scenarios.mnist import ImageInputConfig, MnistFamilyStream, register_mnist_family


def rotation_grid(degrees: float, height: int, width: int, device: torch.device) -> Tensor:
    """A sampling grid [1, H, W, 2] that rotates an image counter-clockwise (as displayed) by ``degrees``.

    ``grid_sample`` reads the output pixel q from the input at ``theta @ q``; in
    image coordinates (y down) a counter-clockwise turn by a has the inverse
    ``[[cos a, -sin a], [sin a, cos a]]``.
    """
    a = math.radians(degrees)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]], device=device)
    return F.affine_grid(theta, [1, 1, height, width], align_corners=False)


def rotate(images: Tensor, grid: Tensor) -> Tensor:
    """Rotate a batch [B, C, H, W] with a grid from ``rotation_grid`` (bilinear, zeros outside)."""
    return F.grid_sample(images, grid.expand(len(images), -1, -1, -1), align_corners=False)


@dataclass(frozen=True)
class RotatedConfig(ImageInputConfig):
    num_tasks: int = field(default=36, metadata={"min": 1})  # tasks, each the dataset rotated by a fixed angle
    degrees_per_task: float = 10.0  # angle between consecutive tasks
    steps_per_task: int = field(default=1000, metadata={"min": 1})  # training batches per task


class RotatedStream(MnistFamilyStream):
    Config = RotatedConfig

    def __init__(self, config: RotatedConfig, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        _, height, width = self.input_shape
        self.grids = [
            rotation_grid(t * config.degrees_per_task, height, width, device) for t in range(config.num_tasks)
        ]

    def transform(self, task: int, images: Tensor) -> Tensor:
        return images if task * self.config.degrees_per_task % 360 == 0 else rotate(images, self.grids[task])


register_mnist_family("rotated", RotatedStream)
