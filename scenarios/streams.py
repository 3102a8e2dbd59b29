"""The Stream API: ordered training segments over a dataset, as device tensors, knowing nothing of methods.

A stream gives the runner its segments (task id and step budget), training
batches, test batches per task and a replay sample of a finished task. Labels
are always task-local (0..l-1); the runner maps them into the scenario's label
space. Streams over image datasets held in memory build on
``scenarios/in_memory.py``; ``scenarios/_template.py`` is a stream to copy.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.registry import Registry

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
    # The attributes that hold the state of the stream's random draws (generators, epoch samplers), which a
    # checkpoint saves and a resumed cell restores; everything else must follow from config and seed. A test
    # resumes every registered stream mid-way and checks that its batches go on as if never stopped.
    sampling_attributes: ClassVar[tuple[str, ...]] = ()

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

    def sampling_state(self) -> dict[str, object]:
        """The state of the stream's random draws, to be pickled as one object (samplers that share a generator
        still share it when restored)."""
        return {name: getattr(self, name) for name in self.sampling_attributes}

    def restore_sampling_state(self, state: dict[str, object]) -> None:
        """Go on drawing where the stream that gave ``state`` (by ``sampling_state``) stopped."""
        if set(state) != set(self.sampling_attributes):
            raise ValueError(f"stream {self.name}: a checkpoint holds {sorted(state)}, not {self.sampling_attributes}")
        for name, value in state.items():
            setattr(self, name, value)

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
