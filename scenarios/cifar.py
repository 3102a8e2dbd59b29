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

from dataclasses import dataclass, field

from scenarios import cifar_data  # noqa: F401  (registers CIFAR10 and CIFAR100)
from scenarios.in_memory import PAD, ClassSplitConfig, ClassSplitStream, InMemoryImageStream, TaskPart
from scenarios.streams import StreamPlan, register_stream


@dataclass(frozen=True)
class SplitCifar100Config(ClassSplitConfig):
    CLASSES = 100
    classes_per_task: int = field(default=5, metadata={"min": 1, "max": 100})  # SupSup, BatchE: 5
    # num_tasks None: 100 // classes_per_task (20)
    augment: bool = True  # random crop and flip of training batches


@register_stream("split_cifar100")
class SplitCifar100(ClassSplitStream):
    Config = SplitCifar100Config
    dataset = "CIFAR100"
    datasets = (dataset,)
    shuffle_classes = True
    crop_padding, flip = PAD, True


@dataclass(frozen=True)
class ICifarConfig:
    num_tasks: int = field(default=5, metadata={"min": 1, "max": 11})  # CIFAR-10, then CIFAR-100 in tens (PSP: 5)
    steps_per_task: int = field(default=20000, metadata={"min": 1})  # PSP sec. 4.2: 20,000
    augment: bool = True  # random crop with 4-pixel padding and horizontal flip of training images


@register_stream("icifar")
class ICifar(InMemoryImageStream):
    Config = ICifarConfig
    datasets = ("CIFAR10", "CIFAR100")
    crop_padding, flip = PAD, True

    @classmethod
    def plan(cls, config: ICifarConfig) -> StreamPlan:  # type: ignore[override]
        test = (10_000 + 1_000 * (config.num_tasks - 1)) // config.num_tasks  # CIFAR-10's, then 10 x 100 each
        return StreamPlan((3, 32, 32), config.num_tasks, config.num_tasks * config.steps_per_task, test)

    def task_parts(self) -> list[TaskPart]:
        parts = [TaskPart("CIFAR10", tuple(range(10)))]
        for t in range(1, self.config.num_tasks):  # type: ignore[attr-defined]
            parts.append(TaskPart("CIFAR100", tuple(range(10 * (t - 1), 10 * t))))
        return parts
