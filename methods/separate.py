"""The baselines of SupSup's Figure 2: one model per task, and one head per task on a fixed trunk.

- ``separate`` (the upper bound): an independent network for every task, so
  nothing is forgotten and nothing is shared. SupSup's "Upper Bound" also
  trains task i's trunk on tasks 1..i; here each task's network starts from
  its own initialisation, the usual reading of "individual models".
- ``separate_heads``: the trunk trains on the first task only, then stays
  fixed; every task gets its own head. ``random_trunk: true`` never trains
  the trunk ("Separate Heads - Rand W").

Both need the task at test time (GG), like ``multihead``, which is the
lower bound (a trunk trained on every task in turn, one head per task).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import BuildContext, Method, Prediction, TorchKit, register_method, tensor_bytes
from methods.multihead import Multihead


@dataclass(frozen=True)
class SeparateConfig:
    """No hyperparameters."""


@register_method("separate")
class Separate(Method):
    takes_weight_decay = True
    relative_speed = {"conv": 0.92}
    version = "1"
    Config = SeparateConfig
    config: SeparateConfig
    scenarios = frozenset({"GG"})  # a model is chosen by the task
    fusion_unavailable = None

    def build(self, context: BuildContext) -> nn.Module:
        kit = TorchKit()
        classes = context.label_space.classes_per_task

        def model() -> nn.Module:
            backbone = context.make_backbone(kit)
            return backbone.with_head(kit, classes)

        self.models = nn.ModuleList(model() for _ in range(context.label_space.num_tasks))
        self.seen: set[int] = set()
        return self.models

    def begin_segment(self, task: int | None, step: int) -> list[nn.Parameter]:
        assert task is not None, "separate runs only where the task is given"
        self.seen.add(task)
        return list(self.models[task].parameters())

    def fused_entry(self, task: int | None) -> nn.Module:
        assert task is not None
        return self.models[task]

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        assert task is not None
        return F.cross_entropy(self.models[task](x), y)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        assert task is not None
        return Prediction(self.models[task](x))

    def storage(self) -> dict[str, int]:
        return {"models": sum(tensor_bytes(self.models[t].parameters()) for t in sorted(self.seen))}


@dataclass(frozen=True)
class SeparateHeadsConfig:
    random_trunk: bool = False  # keep the trunk at its random initialisation ("Separate Heads - Rand W")


@register_method("separate_heads")
class SeparateHeads(Multihead):
    """``multihead`` whose trunk trains on the first task only."""

    relative_speed = {"conv": 1.46}

    version = "1"
    Config = SeparateHeadsConfig
    config: SeparateHeadsConfig

    def build(self, context: BuildContext) -> nn.Module:
        self.first: int | None = None
        return super().build(context)

    def begin_segment(self, task: int | None, step: int) -> list[nn.Parameter]:
        assert task is not None, "separate_heads runs only where the task is given"
        self.seen.add(task)
        if self.first is None:
            self.first = task
        train_trunk = task == self.first and not self.config.random_trunk
        self.trunk.requires_grad_(train_trunk)
        params = list(self.heads[task].parameters())
        return params + list(self.trunk.parameters()) if train_trunk else params

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        assert task is not None
        if task == self.first and not self.config.random_trunk:
            return super().loss(x, y, task)
        was_training = self.trunk.training
        self.trunk.eval()  # a fixed trunk: its batch-norm statistics stay those of the first task
        try:
            return F.cross_entropy(self.heads[task](self.trunk(x)), y)
        finally:
            self.trunk.train(was_training)
