"""Copy me to add a stream: ``cp scenarios/_template.py scenarios/my_stream.py``.

Then rename the classes and the registered name, import the module from ``scenarios/__init__.py`` (or, in an
outside package, declare it under the ``harness.streams`` entry-point group), and run ``pytest tests``: the
registry-parametrised tests (``tests/test_streams.py``; ``tests/test_image_streams.py`` runs every method on
colour-image streams) pick the new stream up with no new test code.

As it stands this file is a complete, working stream (MNIST's digits in groups, every other task with its
intensities inverted), so every hook below is one you can keep, change or delete. It is not registered until
imported. Other starting points:

- Only class groups of a dataset, SplitCIFAR100's shape: subclass ``ClassSplitStream`` instead, as
  ``SplitCifar100`` in ``scenarios/cifar.py`` does in a few lines.
- A dataset the harness does not know yet: register it in the same file (``register_dataset``: how to find its
  files, check and cache them, and a small fake in its real format, which the tests' data folder then holds), as
  ``scenarios/svhn.py`` registers SVHN beside its class split.
- Data that is not class groups of an in-memory dataset (generated, or streamed from disk): implement the
  ``Stream`` API of ``scenarios/streams.py`` directly, as ``scenarios/synthetic.py`` and ``scenarios/imagenet.py``
  do. Name the attributes that hold its random draws in ``sampling_attributes`` (checkpoints save them; the
  in-memory streams already do), and a test resumes it mid-way to check nothing was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from scenarios.datasets import image_info
from scenarios.in_memory import ClassSplitConfig, InMemoryImageStream, TaskPart
from scenarios.streams import StreamPlan, register_stream

DATASET = "MNIST"  # any registered in-memory dataset (`harness list streams` shows what each stream reads)


@dataclass(frozen=True)
class TemplateConfig(ClassSplitConfig):
    # Every setting is a typed field with a default and a comment; bounds go in metadata. Settings go into the cell
    # id: add new ones with defaults that keep the old behaviour, and never change what an existing one means.
    CLASSES = 10  # the dataset's classes, so that a grid asking for too many tasks is refused before any work
    classes_per_task: int = field(default=2, metadata={"min": 1, "max": 10})
    invert_odd_tasks: bool = True  # odd tasks see their images with the intensities inverted


@register_stream("template")
class Template(InMemoryImageStream):
    Config = TemplateConfig
    datasets = (DATASET,)  # found, checked and cached (or downloaded) before any cell starts
    config: TemplateConfig

    @classmethod
    def plan(cls, config: TemplateConfig) -> StreamPlan:  # type: ignore[override]
        """The stream's shape from its config alone (no data read): for estimates and dry runs."""
        info = image_info(DATASET)
        tasks = config.num_tasks or info.classes // config.classes_per_task
        test = info.test_examples * config.classes_per_task // info.classes
        return StreamPlan(info.shape, tasks, tasks * config.steps_per_task, test)

    def task_parts(self) -> list[TaskPart]:
        """Which classes of which dataset make each task; their order gives the task-local labels 0..l-1."""
        size = self.config.classes_per_task
        tasks = self.config.num_tasks or image_info(DATASET).classes // size
        return [TaskPart(DATASET, tuple(range(t * size, (t + 1) * size))) for t in range(tasks)]

    def transform(self, task: int, images: Tensor) -> Tensor:
        """A task's images in [0, 1], [B, C, H, W] on the device, training and test alike: no host sync here."""
        return 1 - images if self.config.invert_odd_tasks and task % 2 else images

    # Also yours to override: ``augment(images)`` (training batches only), ``normalise(dataset, x)`` (default: the
    # dataset's channel statistics) and ``segments()`` (default: one segment of ``steps_per_task`` steps per task).
