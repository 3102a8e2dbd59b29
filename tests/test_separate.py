"""The Figure 2 baselines: separate models never interfere; separate heads fix the trunk after the first task."""

from __future__ import annotations

import pytest
import torch

from harness.backbones import BackboneSpec, backbone_factory
from methods.base import BuildContext, LabelSpace
from methods.separate import Separate, SeparateConfig, SeparateHeads, SeparateHeadsConfig

CONTEXT = BuildContext(
    "GG", LabelSpace(3, 2, True), backbone_factory(BackboneSpec("fc", (8,)), (1, 4, 4)), (1, 4, 4),
    torch.device("cpu"), 0,
)  # fmt: skip


def train(method, task: int, steps: int = 5) -> None:  # noqa: ANN001
    optimizer = torch.optim.SGD(method.begin_segment(task, 0), lr=0.5)
    for _ in range(steps):
        loss = method.loss(torch.randn(16, 1, 4, 4), torch.randint(0, 2, (16,)), task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("random_trunk", [False, True])
def test_separate_heads_train_the_trunk_on_the_first_task_only(random_trunk: bool) -> None:
    method = SeparateHeads(SeparateHeadsConfig(random_trunk=random_trunk))
    method.build(CONTEXT)
    initial = snapshot(method.trunk)
    train(method, 0)
    after_first = snapshot(method.trunk)
    assert any(not torch.equal(a, b) for a, b in zip(initial, after_first)) != random_trunk
    head0 = snapshot(method.heads[0])
    train(method, 1)
    assert all(torch.equal(a, b) for a, b in zip(after_first, snapshot(method.trunk)))
    assert all(torch.equal(a, b) for a, b in zip(head0, snapshot(method.heads[0])))
    assert method.storage()["heads"] == 2 * 4 * (8 * 2 + 2)


def test_separate_models_do_not_touch_each_other() -> None:
    method = Separate(SeparateConfig())
    method.build(CONTEXT)
    train(method, 0)
    first = snapshot(method.models[0])
    train(method, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, snapshot(method.models[0])))
    one_model = sum(p.numel() * 4 for p in method.models[0].parameters())
    assert method.storage()["models"] == 2 * one_model
