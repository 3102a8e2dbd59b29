"""A tiny synthetic stream for tests and dry runs: Gaussian classes, new class means for every task.

Each task draws l class means in R^d (d = 64, shaped as an 8x8 image); an
example is its class mean plus unit Gaussian noise. Tasks share no structure,
so a network trained on one forgets another, and a method that keeps its
tasks apart shows it within a few dozen steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scenarios.streams import Batch, EpochSampler, Segment, Stream, StreamPlan, derived_seed, register_stream


@dataclass(frozen=True)
class SyntheticConfig:
    num_tasks: int = field(default=3, metadata={"min": 1})  # tasks of Gaussian classes
    classes_per_task: int = field(default=2, metadata={"min": 2})  # classes in each task
    steps_per_task: int = field(default=50, metadata={"min": 1})  # training batches per task
    train_per_task: int = field(default=512, metadata={"min": 1})  # training examples per task
    test_per_task: int = field(default=256, metadata={"min": 1})  # test examples per task
    separation: float = field(default=2.0, metadata={"min": 0.0})  # scale of the class means (noise std is 1)
    side: int = field(default=8, metadata={"min": 1})  # examples are side x side single-channel images


@register_stream("synthetic")
class SyntheticStream(Stream):
    sampling_attributes = ("generator", "samplers")
    Config = SyntheticConfig

    @classmethod
    def plan(cls, config: SyntheticConfig) -> StreamPlan:  # type: ignore[override]
        side = (1, config.side, config.side)
        return StreamPlan(side, config.num_tasks, config.num_tasks * config.steps_per_task, config.test_per_task)

    def __init__(self, config: SyntheticConfig, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        self.num_tasks = config.num_tasks
        self.classes_per_task = config.classes_per_task
        self.input_shape = (1, config.side, config.side)
        g = torch.Generator().manual_seed(derived_seed(seed, "synthetic data"))
        dim = config.side * config.side
        means = torch.randn(config.num_tasks, config.classes_per_task, dim, generator=g) * config.separation

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.arange(n).remainder(config.classes_per_task).repeat(config.num_tasks, 1)
            x = means[torch.arange(config.num_tasks)[:, None], labels] + torch.randn(
                config.num_tasks, n, dim, generator=g
            )
            return x.view(config.num_tasks, n, *self.input_shape).to(device), labels.to(device)

        self.train_x, self.train_y = draw(config.train_per_task)
        self.test_x, self.test_y = draw(config.test_per_task)
        self.generator = torch.Generator(device=device).manual_seed(derived_seed(seed, "data order"))
        pool = torch.arange(config.train_per_task, device=device)
        self.samplers = [EpochSampler(pool, self.generator) for _ in range(config.num_tasks)]

    def segments(self) -> list[Segment]:
        return [Segment(index=t, task=t, steps=self.config.steps_per_task) for t in range(self.num_tasks)]

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        indices = self.samplers[segment.task].next(min(batch_size, self.config.train_per_task))
        return self.train_x[segment.task, indices], self.train_y[segment.task, indices]

    def sample_train(self, task: int, n: int) -> Batch:
        indices = torch.randint(self.config.train_per_task, (n,), generator=self.generator, device=self.device)
        return self.train_x[task, indices], self.train_y[task, indices]

    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        n = min(limit or self.config.test_per_task, self.config.test_per_task)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self.test_x[task, start:stop], self.test_y[task, start:stop]
