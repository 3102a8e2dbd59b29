"""Copy me to add a method: ``cp methods/_template.py methods/my_method.py``.

Then rename the class and the registered name, import the module from
``methods/__init__.py`` (or, in an outside package, declare it under the
``harness.methods`` entry-point group), and run ``pytest tests``: the
registry-parametrised tests pick the new method up with no new test code.

As it stands this file is a complete, working method (fine-tuning with an
optional L2 pull towards the initial weights), so every hook below is one you
can keep, change or delete. It is not registered until imported.

Checkpoints pickle the method whole (with its module and the optimiser), so keep
only picklable state on ``self`` between segments: tensors, modules, plain
values; no lambdas, no classes defined inside a function, no reference to the
segment's data or to the replay sampler. ``tests/test_checkpoints.py`` stops and
resumes every registered method and says if it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import (
    BuildContext,
    Method,
    Prediction,
    ReplaySampler,
    TorchKit,
    register_method,
    tensor_bytes,
)


@dataclass(frozen=True)
class TemplateConfig:
    # Every hyperparameter is a typed field with a default and a comment; bounds go in metadata.
    l2_to_init: float = field(default=0.0, metadata={"min": 0.0})  # strength of the pull towards the initial weights


@register_method("template")
class Template(Method):
    version = "1"  # bump when results would change: it goes into every result row and the cell id
    Config = TemplateConfig
    scenarios = frozenset({"GG", "GNs", "GNu", "NNs"})  # the scenarios this method can run in
    config: TemplateConfig

    def build(self, context: BuildContext) -> nn.Module:
        kit = TorchKit()  # supply your own kit to change the layer types of every backbone
        backbone = context.make_backbone(kit)
        self.net = backbone.with_head(kit, context.label_space.num_outputs)
        self.initial = [p.detach().clone() for p in self.net.parameters()]
        return self.net  # the root of all modules: the runner moves it between train and eval mode

    def begin_segment(self, task: int | None, step: int) -> None:
        return None  # return a list of parameters to restart the optimiser on them

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        loss = F.cross_entropy(self.net(x), y)
        if self.config.l2_to_init > 0:
            loss = loss + self.config.l2_to_init * sum(
                (p - p0).square().sum() for p, p0 in zip(self.net.parameters(), self.initial)
            )
        return loss

    def after_step(self, step: int) -> None:
        return None  # no .item() or other host sync here: it runs every step

    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        return None  # replay(n) gives n training examples of the task that just ended

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        return Prediction(self.net(x))  # add task=<tensor of inferred task ids> if the method infers them

    def storage(self) -> dict[str, int]:
        parts = {"weights": tensor_bytes(self.net.parameters())}
        if self.config.l2_to_init > 0:
            parts["initial_weights"] = tensor_bytes(self.initial)
        return parts
