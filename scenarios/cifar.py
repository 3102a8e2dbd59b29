"""CIFAR streams: SplitCIFAR100 (SupSup sec. 4.1, BatchE's setup) and iCIFAR (PSP sec. 4.2).

- ``split_cifar100``: 20 tasks of 5 CIFAR-100 classes, the classes in an
  order drawn from the seed (BatchE and SupSup partition CIFAR-100 randomly).
- ``icifar``: task 0 is CIFAR-10, then tasks of 10 contiguous CIFAR-100
  classes (PSP Figure 6b: 4 of them, 20,000 steps each).

Images stay uint8 on the device; training batches get a random crop (zero
padding of 4) and a horizontal flip on the device, as is standard for CIFAR,
unless ``augment`` is off. Each dataset is normalised with its own channel
statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scenarios.cifar_data import load_cifar_dataset
from scenarios.streams import Batch, EpochSampler, Segment, Stream, StreamPlan, derived_seed, register_stream

CHANNEL_STATS = {  # per-channel mean and std of the training images in [0, 1]
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
PAD = 4


def random_crop_and_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Per example: a 32x32 crop of the image padded by 4 with zeros, then a horizontal flip with p = 1/2."""
    n, _, height, width = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * PAD + 1, (n, 1), generator=generator, device=images.device)
    rows = (dy + torch.arange(height, device=images.device))[:, :, None]  # [n, H, 1]
    cols = (dx + torch.arange(width, device=images.device))[:, None, :]  # [n, 1, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


@dataclass(frozen=True)
class TaskPart:
    """A task: some classes of one dataset, in the order that gives their task-local labels."""

    dataset: str
    classes: tuple[int, ...]


class CifarTaskStream(Stream):
    """Discrete tasks over CIFAR datasets held on the device; subclasses say which classes make each task."""

    input_shape = (3, 32, 32)

    def __init__(self, config: object, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        self.parts = self.task_parts()
        self.num_tasks = len(self.parts)
        self.classes_per_task = max(len(p.classes) for p in self.parts)
        self.data: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        for name in {p.dataset for p in self.parts}:
            arrays = load_cifar_dataset(name, data_dir)
            self.data[name] = tuple(  # type: ignore[assignment]
                torch.from_numpy(a).to(device)
                for a in (arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels)
            )
        self.generator = torch.Generator(device=device).manual_seed(derived_seed(seed, "data order"))
        self._samplers: dict[int, EpochSampler] = {}
        self._test_pools: dict[int, Tensor] = {}
        self._local: dict[int, Tensor] = {}

    def task_parts(self) -> list[TaskPart]:
        raise NotImplementedError

    def segments(self) -> list[Segment]:
        steps = self.config.steps_per_task  # type: ignore[attr-defined]
        return [Segment(index=t, task=t, steps=steps) for t in range(self.num_tasks)]

    def _local_labels(self, task: int) -> Tensor:
        """Dataset class -> task-local label (-1 for classes outside the task)."""
        if task not in self._local:
            part = self.parts[task]
            lookup = torch.full((int(self.data[part.dataset][1].max()) + 1,), -1, device=self.device)
            lookup[torch.tensor(part.classes, device=self.device)] = torch.arange(len(part.classes), device=self.device)
            self._local[task] = lookup
        return self._local[task]

    def _pool(self, task: int, train: bool) -> Tensor:
        labels = self.data[self.parts[task].dataset][1 if train else 3]
        return torch.nonzero(self._local_labels(task)[labels] >= 0).squeeze(1)

    def _prepare(self, task: int, indices: Tensor, train: bool) -> Batch:
        name = self.parts[task].dataset
        images, labels = self.data[name][0:2] if train else self.data[name][2:4]
        x = images[indices].float().div_(255.0)
        if train and self.config.augment:  # type: ignore[attr-defined]
            x = random_crop_and_flip(x, self.generator)
        mean, std = (torch.tensor(s, device=self.device)[:, None, None] for s in CHANNEL_STATS[name])
        return (x - mean) / std, self._local_labels(task)[labels[indices]]

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        if segment.task not in self._samplers:
            self._samplers[segment.task] = EpochSampler(self._pool(segment.task, True), self.generator)
        return self._prepare(segment.task, self._samplers[segment.task].next(batch_size), True)

    def sample_train(self, task: int, n: int) -> Batch:
        pool = self._pool(task, True)
        indices = pool[torch.randint(len(pool), (n,), generator=self.generator, device=self.device)]
        return self._prepare(task, indices, True)

    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        if task not in self._test_pools:
            self._test_pools[task] = self._pool(task, False)
        pool = self._test_pools[task][:limit]
        for start in range(0, len(pool), batch_size):
            yield self._prepare(task, pool[start : start + batch_size], False)


@dataclass(frozen=True)
class SplitCifar100Config:
    classes_per_task: int = field(default=5, metadata={"min": 1, "max": 100})  # SupSup, BatchE: 5
    num_tasks: int | None = field(default=None, metadata={"min": 1})  # None: 100 // classes_per_task (20)
    steps_per_task: int = field(default=1000, metadata={"min": 1})
    augment: bool = True  # random crop and flip of training batches

    def __post_init__(self) -> None:
        if self.num_tasks is not None and self.num_tasks > 100 // self.classes_per_task:
            raise ValueError(
                f"num_tasks must be <= {100 // self.classes_per_task} with {self.classes_per_task} classes"
            )


@register_stream("split_cifar100")
class SplitCifar100(CifarTaskStream):
    Config = SplitCifar100Config
    datasets = ("CIFAR100",)

    @classmethod
    def plan(cls, config: SplitCifar100Config) -> StreamPlan:  # type: ignore[override]
        tasks = config.num_tasks or 100 // config.classes_per_task
        return StreamPlan((3, 32, 32), tasks, tasks * config.steps_per_task, 100 * config.classes_per_task)

    def task_parts(self) -> list[TaskPart]:
        config: SplitCifar100Config = self.config  # type: ignore[assignment]
        order = torch.randperm(100, generator=torch.Generator().manual_seed(derived_seed(self.seed, "class order")))
        count = config.num_tasks or 100 // config.classes_per_task
        size = config.classes_per_task
        return [TaskPart("CIFAR100", tuple(order[t * size : (t + 1) * size].tolist())) for t in range(count)]


@dataclass(frozen=True)
class ICifarConfig:
    num_tasks: int = field(default=5, metadata={"min": 1, "max": 11})  # CIFAR-10, then CIFAR-100 in tens (PSP: 5)
    steps_per_task: int = field(default=20000, metadata={"min": 1})  # PSP sec. 4.2: 20,000
    augment: bool = True


@register_stream("icifar")
class ICifar(CifarTaskStream):
    Config = ICifarConfig
    datasets = ("CIFAR10", "CIFAR100")

    @classmethod
    def plan(cls, config: ICifarConfig) -> StreamPlan:  # type: ignore[override]
        test = (10_000 + 1_000 * (config.num_tasks - 1)) // config.num_tasks  # CIFAR-10's, then 10 x 100 each
        return StreamPlan((3, 32, 32), config.num_tasks, config.num_tasks * config.steps_per_task, test)

    def task_parts(self) -> list[TaskPart]:
        parts = [TaskPart("CIFAR10", tuple(range(10)))]
        for t in range(1, self.config.num_tasks):  # type: ignore[attr-defined]
            parts.append(TaskPart("CIFAR100", tuple(range(10 * (t - 1), 10 * t))))
        return parts
