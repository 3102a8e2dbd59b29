"""Inferring the task from data by superposing task-specific parameters (SupSup sec. 3.3, 3.4, 3.6).

A method supplies ``forward(alpha, rows) -> logits``: its network with the
parameters of candidates ``rows`` superposed with coefficients ``alpha``
(SupSup eq. 2 for masks; BatchE's rank-one factors the same way). The
objective is the output entropy H, or G, the log-sum-exp of the logits with
the gradient flowing only through the superfluous neurons (sec. 3.6, Lemma 1):
``G = logsumexp([stop_grad(p_1..p_l), p_l+1..p_s])``.

- :func:`one_shot`: one gradient at alpha = 1/k; the task is
  ``argmax_i -dObjective/dalpha_i`` (eq. 4).
- :func:`binary`: drop the candidates whose ``-gradient`` is at or below the
  median, re-normalise alpha over the rest, repeat until one is left (Appendix
  A, Algorithm 2). With an odd count the median candidate survives, as in the
  authors' code (they keep ``grad <= median``); at most ``log2 k + 1`` rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from methods.base import LabelSpace, Prediction

Objective = Literal["entropy", "superfluous"]
SuperposedForward = Callable[[Tensor, Tensor | None], Tensor]
"""``forward(alpha, rows)``: logits with candidates ``rows`` (None: all) superposed with weights ``alpha``."""


def entropy_per_example(logits: Tensor) -> Tensor:
    log_p = logits.log_softmax(1)
    return -(log_p.exp() * log_p).sum(1)


def entropy(logits: Tensor) -> Tensor:
    """Mean output entropy H over the examples."""
    return entropy_per_example(logits).mean()


def superfluous_per_example(logits: Tensor, classes: int) -> Tensor:
    if logits.shape[1] <= classes:
        raise ValueError(f"the superfluous-neuron objective needs more outputs than the {classes} classes")
    real, superfluous = logits[:, :classes].detach(), logits[:, classes:]
    return torch.cat([real, superfluous], 1).logsumexp(1)


def superfluous_objective(logits: Tensor, classes: int) -> Tensor:
    """G (sec. 3.6): log-sum-exp over all s outputs, the first ``classes`` cut from the gradient."""
    return superfluous_per_example(logits, classes).mean()


def objective_per_example(name: Objective, logits: Tensor, classes: int) -> Tensor:
    return entropy_per_example(logits) if name == "entropy" else superfluous_per_example(logits, classes)


def comparable_per_example(name: Objective, logits: Tensor, classes: int) -> Tensor:
    """The objective as a value to compare between candidates tried one by one (lower: more likely the task).

    G's value includes the real logits, which a confident right candidate raises; compared by value, only
    the superfluous neurons' log-sum-exp says which candidate was trained on the data.
    """
    if name == "entropy":
        return entropy_per_example(logits)
    if logits.shape[1] <= classes:
        raise ValueError(f"the superfluous-neuron objective needs more outputs than the {classes} classes")
    return logits[:, classes:].logsumexp(1)


def objective_value(name: Objective, logits: Tensor, classes: int) -> Tensor:
    return objective_per_example(name, logits, classes).mean()


def alpha_gradient(
    forward: SuperposedForward,
    rows: Tensor | None,
    count: int,
    objective: Callable[[Tensor], Tensor],
    device: torch.device,
) -> Tensor:
    """``-dObjective/dalpha`` at the uniform alpha over ``count`` candidates."""
    alpha = torch.full((count,), 1.0 / count, device=device, requires_grad=True)
    (grad,) = torch.autograd.grad(objective(forward(alpha, rows)), alpha)
    return -grad


def one_shot(
    forward: SuperposedForward, count: int, objective: Callable[[Tensor], Tensor], device: torch.device
) -> tuple[int, Tensor]:
    """The candidate in whose direction the objective decreases fastest (eq. 4), and ``-gradient``."""
    score = alpha_gradient(forward, None, count, objective, device)
    return int(score.argmax()), score


def binary(forward: SuperposedForward, count: int, objective: Callable[[Tensor], Tensor], device: torch.device) -> int:
    """Halve the candidates by the gradient until one is left (Algorithm 2)."""
    rows = torch.arange(count, device=device)
    for _ in range(binary_rounds(count)):
        if len(rows) == 1:
            break
        rows = halve(rows, alpha_gradient(forward, rows, len(rows), objective, device))
    return int(rows[0])


def binary_rounds(count: int) -> int:
    return math.ceil(math.log2(max(count, 1))) + 1


def halve(rows: Tensor, score: Tensor) -> Tensor:
    """One round of Algorithm 2: the candidates ``rows`` whose ``score`` (-gradient) is above the median."""
    keep = score >= score.median()  # drops g_i <= median when the count is even; keeps the median if odd
    if len(rows) % 2 == 0:
        keep = score > score.median()
    if not bool(keep.any()) or bool(keep.all()):  # ties: fall back on the steepest candidate
        keep = score == score.max()
        keep &= keep.cumsum(0) == 1
    return rows[keep]


def is_uncertain(score: Tensor, count: int, epsilon: float) -> bool:
    """SupSup sec. 3.4: ``nu = softmax(-grad)`` is near uniform when ``count * max(nu) < 1 + epsilon``."""
    return bool(count * score.softmax(0).max() < 1 + epsilon)


def spread_to_label_space(logits: Tensor, task: int, labels: LabelSpace) -> Prediction:
    """A prediction for a batch inferred to be ``task``: shared labels as they are; in GNu the l class logits
    go to that task's block of the k*l label space, the rest at the lowest value, so a wrong task scores 0."""
    tasks = torch.full((len(logits),), task, device=logits.device)
    if labels.shared:
        return Prediction(logits, tasks)
    spread = logits.new_full((len(logits), labels.num_outputs), torch.finfo(logits.dtype).min)
    spread[:, task * labels.classes_per_task : (task + 1) * labels.classes_per_task] = logits
    return Prediction(spread, tasks)
