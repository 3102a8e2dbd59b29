"""The harness's subclasses of Avalanche classes, defined at module level so that a checkpoint can pickle them.

Importing this module imports Avalanche (through ``methods.avalanche.import_avalanche``, with its workarounds),
so only the adapters' build and training code imports it, never the method registry.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from methods.avalanche import import_avalanche, own_weight_copies
from methods.base import SegmentData

_avalanche = import_avalanche()


class HarnessBridge(_avalanche["training"].plugins.SupervisedPlugin):
    """Applies the harness's learning-rate schedule and reports each finished step to the runner."""

    def __init__(self) -> None:
        super().__init__()
        self.data: SegmentData | None = None
        self.index = 0

    def start(self, data: SegmentData) -> None:
        self.data, self.index = data, 0

    def finish(self) -> None:
        self.data = None  # the segment's closures: not state, and they do not pickle

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        assert self.data is not None
        self.data.schedule(strategy.optimizer, self.index)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        assert self.data is not None
        self.index += 1
        self.data.after_step(strategy.loss)


class CopyingSynapticIntelligencePlugin(_avalanche["plugins"].SynapticIntelligencePlugin):
    """Avalanche's SI plugin, made to keep copies of the weights it compares (see methods/avalanche.py)."""

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        super().before_training_exp(strategy, **kwargs)
        own_weight_copies(strategy, self.ewc_data[0])  # the weights at the start of the experience

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        super().before_training_iteration(strategy, **kwargs)
        own_weight_copies(strategy, self.syn_data["old_theta"])  # the weights before this step


class TaskHeads(_avalanche["models"].MultiTaskModule):
    """A shared trunk and one head per task, as the MultiTaskModule Avalanche's plugins expect in GG."""

    def __init__(self, trunk: nn.Module, heads: nn.ModuleList) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = heads

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        return self.heads[int(task_label)](self.trunk(x))


class SegmentExperience(_avalanche["scenarios"].DatasetExperience):
    """One experience holding exactly a segment's batches; it names the classes it holds."""

    def __init__(self, *, dataset: Any, current_experience: int, classes: list[int]) -> None:
        super().__init__(dataset=dataset, current_experience=current_experience)
        self.segment_classes = classes

    @property
    def classes_in_this_experience(self) -> list[int]:
        return self.segment_classes
