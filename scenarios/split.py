"""SplitMNIST: 5 tasks of consecutive digit pairs (0/1, 2/3, ...), labels local to each task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from scenarios.streams import ImageInputConfig, ImageTaskStream, StreamPlan, image_shape, register_mnist_family

DATASET_CLASSES = 10


@dataclass(frozen=True)
class SplitConfig(ImageInputConfig):
    classes_per_task: int = field(default=2, metadata={"min": 1, "max": DATASET_CLASSES})
    num_tasks: int | None = field(default=None, metadata={"min": 1})  # None: as many as the classes allow
    steps_per_task: int = field(default=1000, metadata={"min": 1})

    def __post_init__(self) -> None:
        super().__post_init__()
        most = DATASET_CLASSES // self.classes_per_task
        if self.num_tasks is not None and self.num_tasks > most:
            raise ValueError(f"num_tasks must be <= {most} with {self.classes_per_task} classes per task")


class SplitStream(ImageTaskStream):
    Config = SplitConfig

    def __init__(self, config: SplitConfig, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        self.classes_per_task = config.classes_per_task
        self.num_tasks = config.num_tasks or DATASET_CLASSES // config.classes_per_task

    def task_classes(self, task: int) -> range:
        return range(task * self.classes_per_task, (task + 1) * self.classes_per_task)

    @classmethod
    def plan(cls, config: SplitConfig) -> StreamPlan:  # type: ignore[override]
        tasks = config.num_tasks or DATASET_CLASSES // config.classes_per_task
        test = cls.TEST_EXAMPLES * config.classes_per_task // DATASET_CLASSES
        return StreamPlan(image_shape(config), tasks, tasks * config.steps_per_task, test)


register_mnist_family("split", SplitStream)
