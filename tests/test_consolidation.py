"""EWC's and SI's building blocks against slow, obviously correct references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.backbones import BackboneSpec, backbone_factory
from methods.base import BuildContext, LabelSpace
from methods.ewc import EWC, EWCConfig
from methods.penalty import quadratic_penalty
from methods.si import SI, SIConfig


def built_ewc(shared: bool = True) -> EWC:
    return built(EWC(EWCConfig()), shared)


def built(method: EWC | SI, shared: bool = True, loss_outputs: str = "all") -> EWC | SI:
    torch.manual_seed(0)
    method.build(
        BuildContext(
            scenario="GNs",
            label_space=LabelSpace(num_tasks=2, classes_per_task=3, shared=shared),
            make_backbone=backbone_factory(BackboneSpec("fc", (7, 5)), (1, 4, 4)),
            input_shape=(1, 4, 4),
            device=torch.device("cpu"),
            seed=0,
            loss_outputs=loss_outputs,
        )
    )
    return method


@pytest.mark.parametrize("loss_outputs", ["all", "seen"])
def test_linear_fisher_equals_per_example_gradients(loss_outputs: str) -> None:
    method = built(EWC(EWCConfig()), shared=loss_outputs == "all", loss_outputs=loss_outputs)
    x, y = torch.randn(9, 1, 4, 4), torch.randint(0, 3, (9,))
    fast = method._linear_squared_grads(x, y, 0)
    reference = method._vmap_squared_grads(x, y, 0)
    if loss_outputs == "seen":  # task 0's 3 of the 6 outputs: the head rows of the others get no Fisher
        head = [name for name in fast if name.endswith("weight")][-1]
        assert fast[head][3:].abs().sum() == 0 and fast[head][:3].abs().sum() > 0
    assert fast.keys() == reference.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-4, atol=1e-6)


def test_fisher_of_a_batch_is_the_sum_of_one_example_fishers() -> None:
    method = built_ewc()
    x, y = torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))
    whole = method._linear_squared_grads(x, y, 0)
    parts = [method._linear_squared_grads(x[i : i + 1], y[i : i + 1], 0) for i in range(4)]
    for name in whole:
        torch.testing.assert_close(whole[name], sum(p[name] for p in parts), rtol=1e-4, atol=1e-6)


def test_quadratic_penalty_matches_the_formula_and_its_gradient() -> None:
    torch.manual_seed(1)
    params = [nn.Parameter(torch.randn(3, 4, dtype=torch.double)), nn.Parameter(torch.randn(5, dtype=torch.double))]
    weights = [torch.rand_like(p) for p in params]
    anchors = [torch.randn_like(p) for p in params]
    value = quadratic_penalty(params, weights, anchors, 0.7)
    expected = 0.7 * sum((w * (p - a) ** 2).sum() for p, w, a in zip(params, weights, anchors))
    torch.testing.assert_close(value, expected)
    assert torch.autograd.gradcheck(lambda *ps: quadratic_penalty(ps, weights, anchors, 0.7), tuple(params))


def test_offline_ewc_folds_its_penalties_into_one_equivalent_quadratic() -> None:
    """sum_t F_t (p - m_t)^2 and A (p - m)^2 with A = sum F_t, m = sum F_t m_t / A differ by a constant."""
    method = built_ewc()
    params = list(method.net.parameters())
    fishers = [[torch.rand_like(p) for p in params] for _ in range(3)]
    anchors = [[torch.randn_like(p) for p in params] for _ in range(3)]
    for fisher, anchor in zip(fishers, anchors):
        with torch.no_grad():
            for p, a in zip(params, anchor):
                p.copy_(a)
        method._fisher = lambda replay, task, fisher=fisher: fisher  # type: ignore[method-assign]
        method.end_segment(0, replay=lambda n: (torch.zeros(0), torch.zeros(0)))
    probe = [torch.randn_like(p, requires_grad=True) for p in params]
    folded = quadratic_penalty(probe, method.importance, method.anchor, 1.0)
    separate = sum(quadratic_penalty(probe, f, a, 1.0) for f, a in zip(fishers, anchors))
    folded_grads = torch.autograd.grad(folded, probe)
    separate_grads = torch.autograd.grad(separate, probe)
    for g1, g2 in zip(folded_grads, separate_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_online_ewc_decays_the_old_fisher_and_anchors_at_the_latest_weights() -> None:
    method = built_ewc()
    method.config = EWCConfig(online=True, gamma=0.5)
    params = list(method.net.parameters())
    first = [torch.full_like(p, 2.0) for p in params]
    second = [torch.full_like(p, 1.0) for p in params]
    for fisher in (first, second):
        method._fisher = lambda replay, task, fisher=fisher: fisher  # type: ignore[method-assign]
        with torch.no_grad():
            for p in params:
                p.add_(1.0)
        method.end_segment(0, replay=lambda n: (torch.zeros(0), torch.zeros(0)))
    for p, importance, anchor in zip(params, method.importance, method.anchor):
        torch.testing.assert_close(importance, torch.full_like(p, 0.5 * 2.0 + 1.0))
        torch.testing.assert_close(anchor, p.detach())


def test_si_integrates_the_task_gradient_alone_along_the_steps_taken() -> None:
    """w_k += -g_k delta_k with g the gradient of the task loss without the penalty (Zenke et al. sec. 3)."""
    method = built(SI(SIConfig(c=0.5)))
    params = list(method.net.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)
    reference = [torch.zeros_like(p) for p in params]
    for task in range(2):
        method.begin_segment(task, 0)
        start = [p.detach().clone() for p in params]
        for _ in range(5):
            x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
            task_gradient = torch.autograd.grad(nn.functional.cross_entropy(method.net(x), y), params)
            before = [p.detach().clone() for p in params]
            optimizer.zero_grad()
            method.loss(x, y, task).backward()  # task loss plus, from the second task on, the penalty
            optimizer.step()
            method.after_step(0)
            for w, g, p, b in zip(reference, task_gradient, params, before):
                w -= g * (p.detach() - b)
        if task == 0:
            method.end_segment(task, None)
            for w, p, s, o in zip(reference, params, start, method.omega):
                expected = (w / ((p.detach() - s) ** 2 + method.config.xi)).clamp(min=0.0)
                torch.testing.assert_close(o, expected, rtol=1e-4, atol=1e-6)
                w.zero_()
    assert any(float(o.abs().sum()) > 0 for o in method.omega)
    for w, path in zip(reference, method.path):  # the second task, with the penalty on
        torch.testing.assert_close(path, w, rtol=1e-4, atol=1e-6)
