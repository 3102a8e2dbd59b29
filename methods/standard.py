"""Fine-tuning: one network, one head, trained on whatever comes next (the lower bound of forgetting)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import (
    LOSS_OUTPUTS,
    SCENARIO_NAMES,
    BuildContext,
    Method,
    Prediction,
    TorchKit,
    TrainingOutputs,
    register_method,
    tensor_bytes,
)


@dataclass(frozen=True)
class StandardConfig:
    """No hyperparameters: the optimiser and budgets are the runner's."""


@register_method("standard")
class Standard(Method):
    takes_weight_decay = True
    relative_speed = {"fc": 0.88, "conv": 1.0}
    version = "1"
    Config = StandardConfig
    config: StandardConfig
    scenarios = frozenset(SCENARIO_NAMES)
    loss_outputs = frozenset(LOSS_OUTPUTS)
    fusion_unavailable = None

    def build(self, context: BuildContext) -> nn.Module:
        kit = TorchKit()
        backbone = context.make_backbone(kit)
        self.net = backbone.with_head(kit, context.label_space.num_outputs)
        self.outputs = TrainingOutputs(context.label_space, context.loss_outputs)
        return self.net

    def fused_entry(self, task: int | None) -> nn.Module:
        return self.net

    def training_logits(self, x: Tensor, task: int | None) -> Tensor:
        """The logits the training loss sees: every output, or those the protocol's ``loss_outputs`` keeps."""
        return self.outputs.restrict(self.net(x), task)

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        return F.cross_entropy(self.training_logits(x, task), y)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        return Prediction(self.net(x))

    def storage(self) -> dict[str, int]:
        return {"weights": tensor_bytes(self.net.parameters())}
