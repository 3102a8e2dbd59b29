"""The MNIST family: streams over MNIST or Fashion-MNIST with the input protocol (scaling, padding) of the papers.

Each stream module writes its stream once against ``MnistFamilyStream`` and registers it over both datasets with
``register_mnist_family`` (``permuted_mnist`` and ``permuted_fashion_mnist``, ...).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from scenarios import mnist_data  # noqa: F401  (registers MNIST and FashionMNIST)
from scenarios.datasets import image_info
from scenarios.in_memory import DeviceArrays, InMemoryImageStream, TaskPart
from scenarios.streams import StreamPlan, register_stream

MNIST_SIDE = 28
FAMILY = (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"))  # (stream name suffix, dataset)


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

    # pixels as (x/255 - mean)/std of this dataset, of MNIST, or x/255 (van de Ven)
    input_scaling: Literal["standardise", "standardise_mnist", "unit"] = "standardise"
    # zero-pad images to pad_to x pad_to (van de Ven: 32); 0: as they are
    pad_to: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        if self.pad_to and self.pad_to < MNIST_SIDE:
            raise ValueError(f"pad_to must be 0 (no padding) or >= {MNIST_SIDE} (the image side), got {self.pad_to}")

    @property
    def side(self) -> int:
        return self.pad_to or MNIST_SIDE


class MnistFamilyStream(InMemoryImageStream):
    """Discrete tasks over MNIST or Fashion-MNIST (``dataset``, set by ``register_mnist_family``).

    By default every task is the whole dataset, ``config.num_tasks`` of them, which subclasses tell apart in
    ``transform``. Images are padded once on loading (``pad_to``) and scaled by ``input_scaling``.
    """

    dataset: ClassVar[str]

    @classmethod
    def plan(cls, config: object) -> StreamPlan:
        tasks = config.num_tasks  # type: ignore[attr-defined]
        steps = tasks * config.steps_per_task  # type: ignore[attr-defined]
        return StreamPlan(image_shape(config), tasks, steps, image_info(cls.dataset).test_examples)

    @classmethod
    def plan_shape(cls, config: object) -> tuple[int, ...]:
        return image_shape(config)

    def task_parts(self) -> list[TaskPart]:
        return self.whole_dataset_tasks(self.config.num_tasks)  # type: ignore[attr-defined]

    def whole_dataset_tasks(self, count: int) -> list[TaskPart]:
        return [TaskPart(self.dataset, tuple(range(image_info(self.dataset).classes)))] * count

    def device_arrays(self, name: str) -> DeviceArrays:
        train_x, train_y, test_x, test_y = super().device_arrays(name)
        pad_to = getattr(self.config, "pad_to", 0)
        return pad_images(train_x, pad_to), train_y, pad_images(test_x, pad_to), test_y

    def normalise(self, dataset: str, x: Tensor) -> Tensor:
        """Images in [0, 1] as the network's inputs, by the config's ``input_scaling``."""
        scaling = getattr(self.config, "input_scaling", "standardise")
        if scaling == "unit":
            return x
        info = image_info("MNIST" if scaling == "standardise_mnist" else dataset)
        # Python numbers, not tensors, as ever: CUDA divides by a scalar as a multiplication by its reciprocal, so a
        # tensor here would move results on a GPU by a last bit.
        return (x - info.mean[0]) / info.std[0]


def image_shape(config: object) -> tuple[int, int, int]:
    """The (channels, height, width) an MNIST-family config gives its inputs."""
    side = config.side if isinstance(config, ImageInputConfig) else MNIST_SIDE
    return (1, side, side)


def pad_images(images: Tensor, pad_to: int) -> Tensor:
    """uint8 images [..., H, W] zero-padded on every side to pad_to x pad_to (the extra pixel goes right/bottom)."""
    if not pad_to:
        return images
    height, width = images.shape[-2:]
    top, left = (pad_to - height) // 2, (pad_to - width) // 2
    return F.pad(images, (left, pad_to - width - left, top, pad_to - height - top))


def register_mnist_family(prefix: str, base: type[MnistFamilyStream]) -> None:
    """Register ``base`` over MNIST as ``<prefix>_mnist`` and over Fashion-MNIST as ``<prefix>_fashion_mnist``."""
    for suffix, dataset in FAMILY:
        name = f"{base.__name__}{dataset}"
        attributes = {"dataset": dataset, "datasets": (dataset,), "__module__": base.__module__, "__qualname__": name}
        cls = type(name, (base,), attributes)
        setattr(sys.modules[base.__module__], name, cls)  # importable by name, so it pickles
        register_stream(f"{prefix}_{suffix}")(cls)
