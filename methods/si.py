"""Synaptic Intelligence (Zenke, Poole and Ganguli 2017).

While task mu trains, each parameter accumulates its contribution to the drop
in the task loss along the optimisation path, ``w_k += -g_k * delta_theta_k``
(sec. 3, the path integral, with g the gradient of the task loss alone). When
the task ends, ``Omega_k += w_k / (Delta_k^2 + xi)`` with ``Delta_k`` the
parameter's total change over the task (eq. 5), and later tasks pay the
surrogate loss ``c * sum_k Omega_k (theta_k - theta~_k)^2`` (eq. 4).

The runner's gradient is of the total loss; by default (``path_gradient:
task``) the penalty's share, ``2c Omega (theta_prev - theta~)``, is subtracted
to recover the task gradient, as Zenke et al.'s code integrates the
unregularised gradient, and the accumulated Omega is clamped at zero (a relu),
as there. The penalty's forward pass keeps ``Omega (theta_prev - theta~)`` for
this, so it is not computed twice. van de Ven & Tolias' code (the SI numbers
SupSup quotes; GMvandeVen/continual-learning, branch ``preprints``,
``train.py`` and ``update_omega``) integrates the gradient of the total loss
and does not clamp: ``path_gradient: total, clamp_omega: false``.
Every snapshot is a copy of the weights, never a view of them (a view would
follow the weights and make every delta zero). The per-step update uses
``torch._foreach`` ops, one kernel per operation over all parameters, and no
temporaries: the step's change is formed in the snapshot's own buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from methods.base import BuildContext, ReplaySampler, register_method, tensor_bytes
from methods.penalty import quadratic_penalty
from methods.standard import Standard


@dataclass(frozen=True)
class SIConfig:
    # Strength of the surrogate loss (eq. 4). Zenke et al. used c = 0.1 with Adam at lr 1e-3 for 20 epochs per task;
    # in the papers' regime here (RMSprop lr 1e-4, 1000 steps) weights move far less and c = 0.1 changes nothing.
    # c = 1 gave the best average accuracy on 3-task PermutedMNIST, LeNet 300-100 (0.924; standard 0.912).
    c: float = field(default=1.0, metadata={"min": 0.0})
    xi: float = field(default=0.1, metadata={"min": 0.0})  # damping xi in eq. 5, as the authors' PermutedMNIST runs
    # the gradient the path integral takes: of the task loss alone (Zenke et al.) or of the total loss (van de Ven)
    path_gradient: Literal["task", "total"] = "task"
    clamp_omega: bool = True  # Omega clamped at zero after each task (Zenke et al.'s code); van de Ven does not

    def __post_init__(self) -> None:
        if self.xi <= 0:
            raise ValueError(f"xi must be > 0 (it damps a division by the squared change), got {self.xi}")


@register_method("si")
class SI(Standard):
    relative_speed = {"fc": 0.85, "conv": 0.89}
    version = "1"
    Config = SIConfig
    scenarios = frozenset({"GG", "GNs", "GNu"})  # consolidation needs task boundaries
    fusable_settings = frozenset({"c", "xi"})  # read by the penalty, after_step and end_segment only
    config: SIConfig

    def build(self, context: BuildContext) -> torch.nn.Module:
        net = super().build(context)
        self.params = list(net.parameters())
        self.omega = [torch.zeros_like(p) for p in self.params]  # Omega: consolidated importance
        self.anchor = [p.detach().clone() for p in self.params]  # theta~: weights at the end of the last task
        self.path = [torch.zeros_like(p) for p in self.params]  # w: this task's path integral
        self.previous = [p.detach().clone() for p in self.params]  # weights before the current step
        self.task_start = [p.detach().clone() for p in self.params]
        self.consolidated = False
        self.penalty_terms: list[Tensor] = []  # Omega (theta_prev - theta~) from this step's penalty
        return net

    def begin_segment(self, task: int | None, step: int) -> None:
        with torch.no_grad():
            for start, prev, p in zip(self.task_start, self.previous, self.params):
                start.copy_(p)
                prev.copy_(p)

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        loss = super().loss(x, y, task)
        if not self.consolidated:
            return loss
        return loss + quadratic_penalty(self.params, self.omega, self.anchor, self.config.c, keep=self.penalty_terms)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        previous = [self.previous[i] for i in live]
        path = [self.path[i] for i in live]
        torch._foreach_sub_(previous, params)  # now minus this step's change, -delta
        # w += -g_task * delta, with g_task = g - 2c Omega (theta_prev - theta~): the penalty's share taken out
        torch._foreach_addcmul_(path, [self.params[i].grad for i in live], previous, value=1.0)
        if self.consolidated and self.config.path_gradient == "task":
            terms = [self.penalty_terms[i] for i in live]
            torch._foreach_addcmul_(path, terms, previous, value=-2 * self.config.c)
        torch._foreach_copy_(previous, params)

    @torch.no_grad()
    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        for p, start, w, o, a in zip(self.params, self.task_start, self.path, self.omega, self.anchor):
            o.add_(w / ((p - start).square() + self.config.xi))
            if self.config.clamp_omega:
                o.clamp_(min=0.0)
            a.copy_(p)
            w.zero_()
        self.consolidated = True

    def storage(self) -> dict[str, int]:
        parts = super().storage()
        if self.consolidated:
            parts["omega"] = tensor_bytes(self.omega)
            parts["anchor"] = tensor_bytes(self.anchor)
        return parts
