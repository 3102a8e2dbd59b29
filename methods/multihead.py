"""A shared trunk trained continuously and one head per task (PSP's `multihead`, SupSup's "Lower Bound")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import BuildContext, Method, Prediction, TorchKit, register_method, tensor_bytes


@dataclass(frozen=True)
class MultiheadConfig:
    """No hyperparameters."""


@register_method("multihead")
class Multihead(Method):
    takes_weight_decay = True
    relative_speed = {"fc": 0.98, "conv": 0.94}
    version = "1"
    Config = MultiheadConfig
    config: MultiheadConfig
    scenarios = frozenset({"GG"})  # choosing the head needs the task at test time
    fusion_unavailable = None  # fused: the trunk; each cell's head runs on its slice of the trunk's output

    def build(self, context: BuildContext) -> nn.Module:
        kit = TorchKit()
        backbone = context.make_backbone(kit)
        classes = context.label_space.classes_per_task
        self.trunk = backbone.trunk
        self.heads = nn.ModuleList(
            kit.linear(backbone.feature_dim, classes) for _ in range(context.label_space.num_tasks)
        )
        self.seen: set[int] = set()
        return nn.ModuleDict({"trunk": self.trunk, "heads": self.heads})

    def begin_segment(self, task: int | None, step: int) -> None:
        assert task is not None, "multihead runs only where the task is given"
        self.seen.add(task)

    def fused_entry(self, task: int | None) -> nn.Module:
        return self.trunk

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        assert task is not None
        return F.cross_entropy(self.heads[task](self.trunk(x)), y)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        assert task is not None
        return Prediction(self.heads[task](self.trunk(x)))

    def storage(self) -> dict[str, int]:
        return {
            "trunk": tensor_bytes(self.trunk.parameters()),
            "heads": sum(tensor_bytes(self.heads[t].parameters()) for t in sorted(self.seen)),
        }
