"""Rotating MNIST and Fashion-MNIST (PSP sec. 4.1.3): a continuous domain shift.

Every training step rotates its batch counter-clockwise by ``360 / cycle_steps``
degrees more than the step before: a full turn every ``cycle_steps`` steps
(1000), for ``total_steps`` steps (50,000). The stream is cut into segments of
``context_every`` steps (100, where PSP changes its context), and segment i
is task ``i mod (cycle_steps / context_every)``: the same 10 tasks recur every
cycle. Task w's test set is the test images turned by the angle at which its
window starts, so task 0 is the 0-degree test set of PSP's Figures 4b and 5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from scenarios.in_memory import TaskPart
from scenarios.mnist import ImageInputConfig, MnistFamilyStream, image_shape, register_mnist_family
from scenarios.rotated import rotate, rotation_grid
from scenarios.streams import Batch, Segment, StreamPlan


@dataclass(frozen=True)
class RotatingConfig(ImageInputConfig):
    total_steps: int = field(default=50_000, metadata={"min": 1})  # training batches of the whole stream
    cycle_steps: int = field(default=1000, metadata={"min": 1})  # steps for a full 360-degree turn
    context_every: int = field(default=100, metadata={"min": 1})  # steps per segment (task window)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycle_steps % self.context_every:
            raise ValueError(
                f"cycle_steps ({self.cycle_steps}) must be a multiple of context_every ({self.context_every})"
            )


class RotatingStream(MnistFamilyStream):
    Config = RotatingConfig
    config: RotatingConfig

    @classmethod
    def plan(cls, config: RotatingConfig) -> StreamPlan:  # type: ignore[override]
        windows = -(-config.total_steps // config.context_every)
        return StreamPlan(
            image_shape(config), config.cycle_steps // config.context_every, config.total_steps, 10_000, windows
        )

    def __init__(self, config: RotatingConfig, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        _, self.height, self.width = self.input_shape
        self.test_grids = [
            rotation_grid(self.angle(t * config.context_every), self.height, self.width, device)
            for t in range(self.num_tasks)
        ]

    def task_parts(self) -> list[TaskPart]:
        return self.whole_dataset_tasks(self.config.cycle_steps // self.config.context_every)

    def angle(self, step: int) -> float:
        return 360.0 * (step % self.config.cycle_steps) / self.config.cycle_steps

    def segments(self) -> list[Segment]:
        every, total = self.config.context_every, self.config.total_steps
        return [
            Segment(index=i, task=i % self.num_tasks, steps=min(every, total - start))
            for i, start in enumerate(range(0, total, every))
        ]

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        indices = self._sampler(0).next(batch_size)  # every task draws from the whole training set
        images, labels = self.data[self.dataset][0:2]
        x = images[indices].float().div_(255.0)
        angle = self.angle(step)
        if angle:
            x = rotate(x, rotation_grid(angle, self.height, self.width, self.device))
        return self.normalise(self.dataset, x), labels[indices]

    def transform(self, task: int, images: Tensor) -> Tensor:
        return rotate(images, self.test_grids[task]) if task else images

    @classmethod
    def scaled(cls, config: object, factor: float) -> object:
        assert isinstance(config, RotatingConfig)
        return dataclasses.replace(config, total_steps=max(1, round(config.total_steps * factor)))


register_mnist_family("rotating", RotatingStream)
