"""SplitMNIST: 5 tasks of consecutive digit pairs (0/1, 2/3, ...), labels local to each task."""

from __future__ import annotations

from dataclasses import dataclass, field

from scenarios.in_memory import ClassSplitConfig, ClassSplitStream
from scenarios.mnist import ImageInputConfig, MnistFamilyStream, register_mnist_family

DATASET_CLASSES = 10


@dataclass(frozen=True)
class SplitConfig(ClassSplitConfig, ImageInputConfig):
    CLASSES = DATASET_CLASSES
    # classes in each task, taken in label order
    classes_per_task: int = field(default=2, metadata={"min": 1, "max": DATASET_CLASSES})

    def __post_init__(self) -> None:
        ImageInputConfig.__post_init__(self)
        ClassSplitConfig.__post_init__(self)


class SplitStream(ClassSplitStream, MnistFamilyStream):
    """The class split's tasks and plan (first in the method order) with the MNIST family's padding and scaling."""

    Config = SplitConfig


register_mnist_family("split", SplitStream)
