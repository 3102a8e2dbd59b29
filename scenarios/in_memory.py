"""Streams over image datasets held on the device as uint8 tensors, and the general class split.

``InMemoryImageStream`` is the base of every such stream: a task is some classes of one registered dataset
(``TaskPart``); images keep their dataset's shape; batches are drawn on the device in shuffled epochs per task.
Subclasses choose the tasks (``task_parts``) and may change the images per task (``transform``), training
batches alone (``augment``: a random crop, and a flip where ``flip``, when the config's ``augment`` is on and
``crop_padding`` is set), or how pixels become inputs (``normalise``: the dataset's channel statistics).

``ClassSplitStream`` is SplitCIFAR100's and SplitMNIST's shape for any registered dataset: tasks of
``classes_per_task`` classes, in the dataset's class order or one drawn from the seed. A stream of that shape
over another dataset is a config and a few class attributes (see ``scenarios/svhn.py``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from scenarios.datasets import image_info, load_arrays
from scenarios.streams import Batch, EpochSampler, Segment, Stream, StreamPlan, derived_seed

PAD = 4  # the usual random-crop padding of 32x32 images

DeviceArrays = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, test labels


def random_crop_and_flip(images: Tensor, generator: torch.Generator, padding: int = PAD, flip: bool = True) -> Tensor:
    """Per example: a crop of the image's size from the image zero-padded by ``padding``, then (``flip``) a
    horizontal flip with p = 1/2. The result is NCHW-contiguous, as every batch must be: the gather below
    leaves it channels-last, and torch 2.13's oneDNN convolution backward corrupts the heap on some
    channels-last inputs (a ResNet-18 of width 4 crashes within ten steps; widths 8 and 64 do not)."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=images.device)
    rows = (dy + torch.arange(height, device=images.device))[:, :, None]  # [n, H, 1]
    cols = (dx + torch.arange(width, device=images.device))[:, None, :]  # [n, 1, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
    if not flip:
        return cropped
    flipped = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flipped[:, None, None, None], cropped.flip(-1), cropped)


@dataclass(frozen=True)
class TaskPart:
    """A task: some classes of one dataset, in the order that gives their task-local labels."""

    dataset: str
    classes: tuple[int, ...]


class InMemoryImageStream(Stream):
    """Discrete tasks over registered in-memory datasets held on the device; subclasses say what makes each task."""

    sampling_attributes = ("generator", "_samplers")
    crop_padding: ClassVar[int] = 0  # > 0: training batches are randomly cropped when the config's augment is on
    flip: ClassVar[bool] = False  # and flipped horizontally (not for digits)

    def __init__(self, config: object, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        self.parts = self.task_parts()
        self.num_tasks = len(self.parts)
        self.classes_per_task = max(len(p.classes) for p in self.parts)
        names = list(dict.fromkeys(p.dataset for p in self.parts))
        self.data: dict[str, DeviceArrays] = {name: self.device_arrays(name) for name in names}
        self.input_shape = tuple(self.data[names[0]][0].shape[1:])
        self.stats = {name: self._channel_stats(name) for name in names}
        self.generator = torch.Generator(device=device).manual_seed(derived_seed(seed, "data order"))
        self._samplers: dict[int, EpochSampler] = {}
        self._pools: dict[tuple[TaskPart, bool], Tensor] = {}
        self._local: dict[TaskPart, Tensor] = {}

    @abstractmethod
    def task_parts(self) -> list[TaskPart]:
        """What each task is, in task order; called first in ``__init__``, with only the config and seed set."""

    @classmethod
    def plan_shape(cls, config: object) -> tuple[int, ...]:
        """The input shape from the config alone: the first dataset's image shape."""
        return image_info(cls.datasets[0]).shape

    def device_arrays(self, name: str) -> DeviceArrays:
        """The dataset on the device: uint8 images [N, C, H, W] (a one-channel dataset gains its channel axis)."""
        arrays = load_arrays(name, self.data_dir)
        train_x, train_y, test_x, test_y = (
            torch.from_numpy(a).to(self.device)
            for a in (arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels)
        )
        return _channels_first(train_x), train_y, _channels_first(test_x), test_y

    def _channel_stats(self, name: str) -> tuple[Tensor, Tensor]:
        info = image_info(name)
        mean, std = (torch.tensor(s, device=self.device)[:, None, None] for s in (info.mean, info.std))
        return mean, std

    def augment(self, images: Tensor) -> Tensor:
        """Training batches only (replay samples too), images in [0, 1] [B, C, H, W]."""
        if not self.crop_padding or not self.config.augment:  # type: ignore[attr-defined]
            return images
        return random_crop_and_flip(images, self.generator, self.crop_padding, self.flip)

    def transform(self, task: int, images: Tensor) -> Tensor:
        """A task's change to its images in [0, 1] (training and test alike); none by default."""
        return images

    def normalise(self, dataset: str, x: Tensor) -> Tensor:
        mean, std = self.stats[dataset]
        return (x - mean) / std

    def segments(self) -> list[Segment]:
        steps = self.config.steps_per_task  # type: ignore[attr-defined]
        return [Segment(index=t, task=t, steps=steps) for t in range(self.num_tasks)]

    def _local_labels(self, task: int) -> Tensor:
        """Dataset class -> task-local label (-1 for classes outside the task)."""
        part = self.parts[task]
        if part not in self._local:
            lookup = torch.full((int(self.data[part.dataset][1].max()) + 1,), -1, device=self.device)
            lookup[torch.tensor(part.classes, device=self.device)] = torch.arange(len(part.classes), device=self.device)
            self._local[part] = lookup
        return self._local[part]

    def _pool(self, task: int, train: bool) -> Tensor:
        """Indices of the task's examples in its dataset's training or test split, in dataset order."""
        part = self.parts[task]
        if (part, train) not in self._pools:
            labels = self.data[part.dataset][1 if train else 3]
            self._pools[part, train] = torch.nonzero(self._local_labels(task)[labels] >= 0).squeeze(1)
        return self._pools[part, train]

    def _sampler(self, task: int) -> EpochSampler:
        if task not in self._samplers:
            self._samplers[task] = EpochSampler(self._pool(task, True), self.generator)
        return self._samplers[task]

    def _prepare(self, task: int, indices: Tensor, train: bool) -> Batch:
        dataset = self.parts[task].dataset
        images, labels = self.data[dataset][0:2] if train else self.data[dataset][2:4]
        x = images[indices].float().div_(255.0)
        if train:
            x = self.augment(x)
        return self.normalise(dataset, self.transform(task, x)), self._local_labels(task)[labels[indices]]

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        return self._prepare(segment.task, self._sampler(segment.task).next(batch_size), True)

    def sample_train(self, task: int, n: int) -> Batch:
        pool = self._pool(task, True)
        indices = pool[torch.randint(len(pool), (n,), generator=self.generator, device=self.device)]
        return self._prepare(task, indices, True)

    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        pool = self._pool(task, False)[:limit]
        for start in range(0, len(pool), batch_size):
            yield self._prepare(task, pool[start : start + batch_size], False)


def _channels_first(images: Tensor) -> Tensor:
    return images.unsqueeze(1) if images.ndim == 3 else images


def check_task_count(num_tasks: int | None, classes_per_task: int, classes: int) -> None:
    """The config check of a class split, before any data is read."""
    if classes_per_task > classes:
        raise ValueError(f"classes_per_task must be <= {classes} (the dataset's classes), got {classes_per_task}")
    most = classes // classes_per_task
    if num_tasks is not None and num_tasks > most:
        raise ValueError(f"num_tasks must be <= {most} with {classes_per_task} classes per task")


@dataclass(frozen=True)
class ClassSplitConfig:
    """A class split's settings. A subclass sets ``CLASSES`` (its dataset's class count, so that a grid is checked
    before any data is read) and may redeclare a field to change its default or bounds."""

    CLASSES: ClassVar[int]
    classes_per_task: int = field(default=2, metadata={"min": 1})  # classes in each task, taken in label order
    num_tasks: int | None = field(default=None, metadata={"min": 1})  # None: as many as the classes allow
    steps_per_task: int = field(default=1000, metadata={"min": 1})  # training batches per task

    def __post_init__(self) -> None:
        check_task_count(self.num_tasks, self.classes_per_task, self.CLASSES)


class ClassSplitStream(InMemoryImageStream):
    """Tasks of ``classes_per_task`` classes of ``dataset``, ``num_tasks`` of them (None: as many as the classes
    allow), the classes in the dataset's order or, with ``shuffle_classes``, in an order drawn from the seed.

    The config needs ``classes_per_task``, ``num_tasks`` and ``steps_per_task`` (``ClassSplitConfig``), and
    ``augment`` where ``crop_padding`` is set.
    """

    dataset: ClassVar[str]
    shuffle_classes: ClassVar[bool] = False

    @classmethod
    def task_count(cls, config: object) -> int:
        return config.num_tasks or image_info(cls.dataset).classes // config.classes_per_task  # type: ignore[attr-defined]

    @classmethod
    def plan(cls, config: object) -> StreamPlan:
        info, tasks, size = image_info(cls.dataset), cls.task_count(config), config.classes_per_task  # type: ignore[attr-defined]
        steps = tasks * config.steps_per_task  # type: ignore[attr-defined]
        return StreamPlan(cls.plan_shape(config), tasks, steps, info.test_examples * size // info.classes)

    def class_order(self) -> list[int]:
        classes = image_info(self.dataset).classes
        if not self.shuffle_classes:
            return list(range(classes))
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "class order"))
        return torch.randperm(classes, generator=generator).tolist()

    def task_parts(self) -> list[TaskPart]:
        order, size = self.class_order(), self.config.classes_per_task  # type: ignore[attr-defined]
        return [
            TaskPart(self.dataset, tuple(order[t * size : (t + 1) * size])) for t in range(self.task_count(self.config))
        ]
