"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) with a diagonal Fisher, offline or online.

Penalty (Kirkpatrick eq. 3): ``lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2``.

Offline EWC keeps one quadratic per finished task; their sum is itself one
quadratic, ``lambda/2 * sum_i A_i (theta_i - m_i)^2 + const`` with
``A = sum_t F_t`` and the Fisher-weighted anchor ``m = sum_t F_t theta*_t / A``.
Storing (A, m) gives the same gradients at a cost per step that does not grow
with the number of tasks; the reported loss differs by a constant only.

Online EWC (Schwarz et al. 2018, "Progress & Compress") keeps one running
Fisher ``A <- gamma * A + F_t`` anchored at the latest task's weights.

The Fisher is the mean of squared per-example gradients of the log-likelihood
over ``fisher_samples`` training examples of the finished task, drawn at
random with replacement, with labels sampled from the model's own predictive
distribution (the true Fisher, as in Kirkpatrick et al.), the model's most
probable label (``fisher_labels: predicted``, van de Ven & Tolias 2019's
code), or the data's labels (``empirical``). The log-likelihood is over the
outputs the training loss sees (the protocol's ``loss_outputs``: in
van de Ven & Tolias' class-incremental runs, the classes seen so far).

Against van de Ven & Tolias' code (GMvandeVen/continual-learning, branch
``preprints``, ``estimate_fisher``), with their class-incremental settings
(``fisher_samples: 60000``, ``fisher_labels: predicted``): they take one pass
over the training set at batch 1, without replacement, and divide the sum by
the number of examples minus one; and their online EWC multiplies the running
Fisher by gamma once more inside the penalty. Neither matters at their
gamma = 1 and 60,000 examples. For a linear layer the sum of squared per-example gradients is
``(delta^2)^T (x^2)`` (delta: the gradient at the layer's output, x: its
input), one matmul per batch; networks with other parameterised layers fall
back to per-example gradients with ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from methods.base import BuildContext, ReplaySampler, register_method, tensor_bytes
from methods.penalty import quadratic_penalty
from methods.standard import Standard

FISHER_CHUNK = 128  # examples per vmap call: bounds the memory of per-example gradients


@dataclass(frozen=True)
class EWCConfig:
    # penalty strength; 100 gave the best average accuracy in the papers' regime (3-task PermutedMNIST,
    # LeNet 300-100, RMSprop lr 1e-4, 1000 steps per task: 0.922 against 0.892 for 1000 and 0.912 for standard)
    ewc_lambda: float = field(default=100.0, metadata={"min": 0.0})
    online: bool = False  # False: offline EWC (one penalty per task); True: online EWC
    gamma: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})  # online EWC: decay of the old Fisher
    fisher_samples: int = field(default=1024, metadata={"min": 1})  # examples of the finished task for its Fisher
    # labels drawn from the model's distribution, its most probable label (van de Ven & Tolias), or the data's
    fisher_labels: Literal["sampled", "predicted", "empirical"] = "sampled"


@register_method("ewc")
class EWC(Standard):
    relative_speed = {"fc": 0.81, "conv": 0.63}
    version = "1"
    Config = EWCConfig
    scenarios = frozenset({"GG", "GNs", "GNu"})  # consolidation needs task boundaries
    fusable_settings = frozenset({"ewc_lambda", "gamma"})  # read by the penalty and end_segment only
    config: EWCConfig

    def build(self, context: BuildContext) -> torch.nn.Module:
        net = super().build(context)
        self.importance = [torch.zeros_like(p) for p in net.parameters()]
        self.anchor = [p.detach().clone() for p in net.parameters()]
        self.consolidated = False
        return net

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        loss = super().loss(x, y, task)
        if not self.consolidated:
            return loss
        return loss + quadratic_penalty(
            list(self.net.parameters()), self.importance, self.anchor, 0.5 * self.config.ewc_lambda
        )

    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        assert replay is not None
        fisher = self._fisher(replay, task)
        params = [p.detach() for p in self.net.parameters()]
        with torch.no_grad():
            for a, m, f, p in zip(self.importance, self.anchor, fisher, params):
                if self.config.online:
                    a.mul_(self.config.gamma).add_(f)
                    m.copy_(p)
                else:
                    total = a + f
                    weighted = a * m + f * p
                    m.copy_(torch.where(total > 0, weighted / total.clamp_min(1e-30), p))
                    a.copy_(total)
        self.consolidated = True

    def _fisher(self, replay: ReplaySampler, task: int | None) -> list[Tensor]:
        was_training = self.net.training
        self.net.eval()
        linear_only = all(
            isinstance(module, torch.nn.Linear) or not list(module.parameters(recurse=False))
            for module in self.net.modules()
        )
        sums = {n: torch.zeros_like(p) for n, p in self.net.named_parameters()}
        remaining = self.config.fisher_samples
        while remaining > 0:
            x, y = replay(min(FISHER_CHUNK, remaining))
            if self.config.fisher_labels != "empirical":
                with torch.no_grad():
                    logits = self.outputs.restrict(self.net(x), task)
                    if self.config.fisher_labels == "sampled":
                        y = torch.distributions.Categorical(logits=logits).sample()
                    else:
                        y = logits.argmax(1)
            if linear_only:
                chunk = self._linear_squared_grads(x, y, task)
            else:
                chunk = self._vmap_squared_grads(x, y, task)
            for n, value in chunk.items():
                sums[n] += value
            remaining -= len(x)
        self.net.train(was_training)
        return [sums[n] / self.config.fisher_samples for n, _ in self.net.named_parameters()]

    def _linear_squared_grads(self, x: Tensor, y: Tensor, task: int | None) -> dict[str, Tensor]:
        """Sum over the batch of squared per-example gradients, for a network whose weights are all in nn.Linear."""
        inputs: dict[torch.nn.Module, Tensor] = {}
        outputs: dict[torch.nn.Module, Tensor] = {}

        def keep(module: torch.nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            inputs[module] = args[0].detach()
            outputs[module] = output

        linears = [m for m in self.net.modules() if isinstance(m, torch.nn.Linear)]
        handles = [m.register_forward_hook(keep) for m in linears]
        try:
            logits = self.outputs.restrict(self.net(x), task)
            loss = F.cross_entropy(logits, y, reduction="sum")  # example i's loss reaches only its own row
        finally:
            for handle in handles:
                handle.remove()
        deltas = torch.autograd.grad(loss, [outputs[m] for m in linears])
        names = {p: n for n, p in self.net.named_parameters()}
        result = {}
        for module, delta in zip(linears, deltas):
            delta_sq = delta.square()
            result[names[module.weight]] = delta_sq.T @ inputs[module].square()
            if module.bias is not None:
                result[names[module.bias]] = delta_sq.sum(0)
        return result

    def _vmap_squared_grads(self, x: Tensor, y: Tensor, task: int | None) -> dict[str, Tensor]:
        params = {n: p.detach() for n, p in self.net.named_parameters()}

        def example_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            logits = self.outputs.restrict(functional_call(self.net, params, (x.unsqueeze(0),)), task)
            return F.cross_entropy(logits, y.unsqueeze(0))

        grads = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, x, y)
        return {n: g.square().sum(0) for n, g in grads.items()}

    def storage(self) -> dict[str, int]:
        parts = super().storage()
        if self.consolidated:  # what training further needs; prediction alone needs only the weights
            parts["fisher"] = tensor_bytes(self.importance)
            parts["anchor"] = tensor_bytes(self.anchor)
        return parts
