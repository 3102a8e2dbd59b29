"""The Stream API: ordered training segments over a dataset, as device tensors, knowing nothing of methods.

A stream gives the runner its segments (task id and step budget), training
batches, test batches per task and a replay sample of a finished task. Labels
are always task-local (0..l-1); the runner maps them into the scenario's label
space.
"""

from __future__ import annotations

import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.registry import Registry
from scenarios.datasets import load_idx_dataset

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Segment:
    index: int
    task: int
    steps: int


@dataclass(frozen=True)
class StreamPlan:
    """What a stream's config implies before any data is read: for compute estimates and dry runs."""

    input_shape: tuple[int, ...]
    num_tasks: int
    train_steps: int  # over the whole stream
    test_per_task: int  # test examples of a task
    segments: int = 0  # 0: one per task

    @property
    def segment_count(self) -> int:
        return self.segments or self.num_tasks


class EpochSampler:
    """Indices of a pool in shuffled epochs (without replacement within an epoch), drawn on the device."""

    def __init__(self, pool: Tensor, generator: torch.Generator) -> None:
        self.pool = pool
        self.generator = generator
        self.order = pool[:0]
        self.cursor = 0

    def next(self, n: int) -> Tensor:
        if self.cursor + n > len(self.order):
            permutation = torch.randperm(len(self.pool), generator=self.generator, device=self.pool.device)
            self.order = self.pool[permutation]
            self.cursor = 0
        indices = self.order[self.cursor : self.cursor + n]
        self.cursor += n
        return indices


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (permutations, data order, ...) so that purposes do not share random draws."""
    return int(np.random.SeedSequence([seed, *purpose.encode()]).generate_state(1)[0])


class Stream(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    datasets: ClassVar[tuple[str, ...]] = ()  # datasets read from the data folder (checked before any work starts)

    num_tasks: int
    classes_per_task: int
    input_shape: tuple[int, ...]

    def __init__(self, config: object, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        self.config = config
        self.seed = seed
        self.device = device
        self.data_dir = data_dir

    @abstractmethod
    def segments(self) -> list[Segment]: ...

    @abstractmethod
    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        """The batch for the given step (global step count) of a segment."""

    @abstractmethod
    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """The task's test set (its first ``limit`` examples when given), in a fixed order."""

    @abstractmethod
    def sample_train(self, task: int, n: int) -> Batch:
        """n random training examples of a task (for methods that consolidate at segment ends)."""

    @classmethod
    def plan(cls, config: object) -> StreamPlan:
        """The stream's shape from its config alone (no data read)."""
        raise NotImplementedError(f"stream {cls.name} does not describe its plan")

    @classmethod
    def scaled(cls, config: object, factor: float) -> object:
        """The config with its step budgets multiplied by factor (``--scale``)."""
        steps = config.steps_per_task
        return dataclasses.replace(config, steps_per_task=max(1, round(steps * factor)))  # type: ignore[type-var]

    @classmethod
    def capped(cls, config: object, max_tasks: int) -> object:
        """The config with at most ``max_tasks`` tasks (``--max-tasks``); unchanged if it has no task count or
        already fewer. A count left to the data (None) becomes ``max_tasks`` where the config accepts it."""
        if not hasattr(config, "num_tasks"):
            return config
        current = config.num_tasks
        if current is not None and current <= max_tasks:
            return config
        try:
            return dataclasses.replace(config, num_tasks=max_tasks)  # type: ignore[type-var]
        except ValueError:  # fewer tasks than asked exist (e.g. SplitMNIST's 5)
            return config


STREAMS: Registry[type[Stream]] = Registry("stream", entry_point_group="harness.streams")


def register_stream(name: str) -> Callable[[type[Stream]], type[Stream]]:
    def add(cls: type[Stream]) -> type[Stream]:
        cls.name = name
        return STREAMS.register(name)(cls)

    return add


MNIST_SIDE = 28


@dataclass(frozen=True)
class ImageInputConfig:
    """How an MNIST-family stream turns pixels into inputs: protocol choices that move published numbers.

    ``standardise`` is ``(x/255 - mean) / std`` with the dataset's pixel statistics (the harness default; SupSup's
    code and PSP's normalise MNIST so); ``standardise_mnist`` uses MNIST's statistics whatever the dataset, as PSP's
    code normalises Fashion-MNIST (``datasets/rotating.py``: ``Normalize((0.1307,), (0.3081,))``); ``unit`` is
    ``x/255`` in [0, 1] (van de Ven & Tolias 2019). ``pad_to``
    zero-pads the raw image (pixel value 0, before scaling and before any permutation or rotation) to
    ``pad_to x pad_to``, as van de Ven & Tolias pad MNIST to 32x32 (``transforms.Pad(2)``) and permute all 1024
    pixels; 0 keeps 28x28. Measured on class-incremental PermutedMNIST, either choice alone moves fine-tuning's
    accuracy on old tasks by tens of points (issue 12).
    """

    input_scaling: Literal["standardise", "standardise_mnist", "unit"] = "standardise"
    pad_to: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        if self.pad_to and self.pad_to < MNIST_SIDE:
            raise ValueError(f"pad_to must be 0 (no padding) or >= {MNIST_SIDE} (the image side), got {self.pad_to}")

    @property
    def side(self) -> int:
        return self.pad_to or MNIST_SIDE


class ImageTaskStream(Stream):
    """Discrete tasks over one uint8 image dataset held on the device.

    Subclasses choose each task's examples (``task_classes``) and its transform
    (``transform``, applied per batch on the device to images in [0, 1]).
    """

    dataset: ClassVar[str]
    mean: ClassVar[float]
    std: ClassVar[float]
    classes_per_task = 10
    TEST_EXAMPLES: ClassVar[int] = 10_000  # MNIST's and Fashion-MNIST's test sets

    @classmethod
    def plan(cls, config: object) -> StreamPlan:
        tasks = config.num_tasks  # type: ignore[attr-defined]
        return StreamPlan(image_shape(config), tasks, tasks * config.steps_per_task, cls.TEST_EXAMPLES)  # type: ignore[attr-defined]

    def __init__(self, config: object, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        arrays = load_idx_dataset(self.dataset, data_dir)
        pad_to = getattr(config, "pad_to", 0)
        self.train_images = pad_images(torch.from_numpy(arrays.train_images).to(device), pad_to)
        self.train_labels = torch.from_numpy(arrays.train_labels).to(device)
        self.test_images = pad_images(torch.from_numpy(arrays.test_images).to(device), pad_to)
        self.test_labels = torch.from_numpy(arrays.test_labels).to(device)
        self.input_shape = (1, *self.train_images.shape[1:])
        self.generator = torch.Generator(device=device).manual_seed(derived_seed(seed, "data order"))
        self._samplers: dict[int, EpochSampler] = {}
        self._test_pools: dict[int, Tensor] = {}

    def segments(self) -> list[Segment]:
        steps = self.config.steps_per_task
        return [Segment(index=t, task=t, steps=steps) for t in range(self.num_tasks)]

    def task_classes(self, task: int) -> range:
        """The dataset classes of a task; their order gives the task-local labels."""
        return range(self.classes_per_task)

    def transform(self, task: int, images: Tensor) -> Tensor:
        return images

    def _pool(self, labels: Tensor, task: int) -> Tensor:
        classes = self.task_classes(task)
        if len(classes) == int(labels.max()) + 1:
            return torch.arange(len(labels), device=self.device)
        return torch.nonzero((labels >= classes.start) & (labels < classes.stop)).squeeze(1)

    def scale(self, x: Tensor) -> Tensor:
        """Images in [0, 1] as the network's inputs, by the config's ``input_scaling``."""
        scaling = getattr(self.config, "input_scaling", "standardise")
        if scaling == "unit":
            return x
        mean, std = MNIST_STATS["MNIST"] if scaling == "standardise_mnist" else (self.mean, self.std)
        return (x - mean) / std

    def _prepare(self, task: int, images: Tensor, labels: Tensor) -> Batch:
        x = self.transform(task, images.unsqueeze(1).float().div_(255.0))
        return self.scale(x), labels - self.task_classes(task).start

    def _sampler(self, task: int) -> EpochSampler:
        if task not in self._samplers:
            self._samplers[task] = EpochSampler(self._pool(self.train_labels, task), self.generator)
        return self._samplers[task]

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        indices = self._sampler(segment.task).next(batch_size)
        return self._prepare(segment.task, self.train_images[indices], self.train_labels[indices])

    def sample_train(self, task: int, n: int) -> Batch:
        pool = self._pool(self.train_labels, task)
        indices = pool[torch.randint(len(pool), (n,), generator=self.generator, device=self.device)]
        return self._prepare(task, self.train_images[indices], self.train_labels[indices])

    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        if task not in self._test_pools:
            self._test_pools[task] = self._pool(self.test_labels, task)
        pool = self._test_pools[task][:limit]
        for start in range(0, len(pool), batch_size):
            indices = pool[start : start + batch_size]
            yield self._prepare(task, self.test_images[indices], self.test_labels[indices])


def image_shape(config: object) -> tuple[int, int, int]:
    """The (channels, height, width) an MNIST-family config gives its inputs."""
    side = config.side if isinstance(config, ImageInputConfig) else MNIST_SIDE
    return (1, side, side)


def pad_images(images: Tensor, pad_to: int) -> Tensor:
    """uint8 images [N, H, W] zero-padded on every side to pad_to x pad_to (the extra pixel goes right/bottom)."""
    if not pad_to:
        return images
    height, width = images.shape[1:]
    top, left = (pad_to - height) // 2, (pad_to - width) // 2
    return F.pad(images, (left, pad_to - width - left, top, pad_to - height - top))


MNIST_STATS = {"MNIST": (0.1307, 0.3081), "FashionMNIST": (0.2860, 0.3530)}  # pixel mean and std in [0, 1]


def register_mnist_family(prefix: str, base: type[ImageTaskStream]) -> None:
    """Register ``base`` over MNIST as ``<prefix>_mnist`` and over Fashion-MNIST as ``<prefix>_fashion_mnist``."""
    for suffix, dataset in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")):
        mean, std = MNIST_STATS[dataset]
        attributes = {"dataset": dataset, "datasets": (dataset,), "mean": mean, "std": std}
        name = f"{base.__name__}{dataset}"
        cls = type(name, (base,), {**attributes, "__module__": base.__module__, "__qualname__": name})
        setattr(sys.modules[base.__module__], name, cls)  # importable by name, so it pickles
        register_stream(f"{prefix}_{suffix}")(cls)
