"""BatchEnsemble for continual learning (Wen et al. 2020), as SupSup compares with it (sec. 4.1, Figure 5-right).

Every linear layer of task t computes with ``W * (r_t s_t^T)``, i.e.
``y = r_t * (W (s_t * x))``: one shared weight matrix and a rank-one factor
per task. The shared weights train on the first task only (with that task's
factors); later tasks train only their own factors, and in GG their own head.
``random_weights: true`` never trains W (SupSup's "BatchE - Rand W").

Choices where the papers are silent, following the authors' SupSup code:
factors start at random signs (+-1) drawn from the seed; factors train with
their own learning rate (``factor_lr``; the authors use Adam at 1e-2 for
factors and 1e-4 for weights) under the run's optimiser; layers have no bias.

Where the harness's defaults differ from the authors' code
(RAIVNLab/supsup, ``experiments/GNu/MNISTPerm/FC-250-tasks/batche.py``), a
setting gives theirs: ``weight_init: kaiming_normal`` (their ``conv_init``;
the default is PyTorch's, about 2.45 times smaller per layer on FC 1024-1024),
``first_task_factor_lr: weights`` (their first task trains its factors with W
at ``train_weight_lr``, 1e-4; later tasks at 1e-2) and ``gg_head: factors``
(their last layer is a rank-one layer too, with each task's factors, where the
default gives each task its own linear head in GG). Their Adam and L2 decay are
training settings (``optimizer: adam``); their L2 decay is this method's
``weight_decay``, not the run's, because the factors of every task share one
tensor here, which torch's decay would erode: theirs keeps each task's factors
in a parameter of its own, so their Adam decays only what the task trains.

In GNs and GNu the task is inferred with One-Shot (SupSup Figure 5-right),
with a coefficient per task's rank-one factors: the superposed layer is
``W * (R diag(alpha) S^T)``, one matrix product per layer whatever k is. As
with SupSup, the last layer then has ``output_size`` outputs and is shared
(with its own factors); in GG each task has a plain linear head instead.

Over many test batches at once (``predict_many``, issue 15), One-Shot from
one or two images a batch takes every image's alpha-gradient in one pass:
per linear layer ``(delta_n * r_j) . W (x_n * s_j)`` for every image n and
task j, one matrix product, instead of a superposition and a projection per
batch; networks with batch norm or convolutions infer batch by batch. Lowest
tries every task's factors on all the batches' images together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config import added_setting
from methods.base import BuildContext, Method, Prediction, register_method, tensor_bytes
from methods.norms import batch_statistics, normalise, per_channel
from methods.supermask import seeded_generator
from methods.task_inference import (
    Objective,
    comparable_per_example,
    objective_per_example,
    objective_value,
    one_shot,
    spread_to_label_space,
)

TRIAL_ROWS = 4096  # images x tasks per forward pass when every task's factors are tried
SCORE_ELEMENTS = 1 << 23  # images x tasks x units per product when One-Shot scores many test batches at once
# One-Shot across test batches costs images x tasks layer products per batch, against about 2 x tasks (the
# superposition and the gradient's projection) batch by batch: it pays from one or two images a batch. Measured
# (FC 1024-1024, s = 500, one loaded thread, classification included): from 1 image 83 -> 25 ms per batch at 10
# tasks, 112 -> 64 at 250; from all 128, 94 -> 369 at 10.
ONE_SHOT_BATCHED_IMAGES_AT_MOST = 2


@dataclass(frozen=True)
class BatchEConfig:
    output_size: int = field(default=0, metadata={"min": 0})  # GNs/GNu: outputs of the shared last layer (0: l)
    factor_lr: float = field(default=1e-2, metadata={"min": 0.0})  # learning rate of the rank-one factors
    random_weights: bool = False  # keep W at its random initialisation (never trained)
    factor_init: Literal["random_sign", "ones"] = "random_sign"  # a new task's r and s (authors: random signs)
    # W: PyTorch's default, or the authors' (kaiming normal, fan_in)
    weight_init: Literal["default", "kaiming_normal"] = added_setting("default")
    # the first task's factors: as later tasks' (factor_lr), or at the weights' learning rate, trained together
    # with W (the authors')
    first_task_factor_lr: Literal["factor_lr", "weights"] = added_setting("factor_lr")
    # GG: a linear head per task, or the authors' rank-one last layer with each task's factors (output_size
    # outputs, as in GNs and GNu)
    gg_head: Literal["per_task", "factors"] = added_setting("per_task")
    # L2 decay of what the segment trains and nothing else: the task's own factors (its head and norm rows), and W on
    # the first task. The authors' Adam weight_decay (1e-4 by default) on their per-task parameters; added to the
    # loss as weight_decay / 2 * |p|^2, which is the gradient torch's coupled weight_decay adds
    weight_decay: float = added_setting(0.0, min=0.0)
    # GNs/GNu: One-Shot over the rank-one factors (SupSup Figure 5-right), or every task's factors tried on the
    # images and the lowest objective taken (the authors' code for BatchE; k forward passes, batched). Measured
    # here (FC 1024-1024, 10 PermutedMNIST tasks, s=500, full batch): One-Shot named the first task for almost
    # every batch; "lowest" with entropy was right for every batch. Compared by value, G also favoured task 0.
    inference: Literal["one_shot", "lowest"] = "one_shot"
    objective: Objective = "entropy"  # the objective of either: entropy H or superfluous G
    # images of a test batch to infer from (0: all). The whole batch by default: from one image, One-Shot over
    # rank-one factors picked the first task (whose weights were trained) for almost every batch in our runs
    inference_images: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        if self.objective == "superfluous" and self.output_size == 0:
            raise ValueError("objective superfluous needs superfluous neurons: set output_size above the class count")


class Selection:
    """The factors every layer uses: one task's (or one per example), or a superposition with coefficients alpha."""

    def __init__(self) -> None:
        self.task: int | Tensor = 0
        self.alpha: Tensor | None = None
        self.capture: list[tuple[RankOneLinear, Tensor, Tensor]] | None = None  # superposed layers' (input, output)


class RankOneLayer(nn.Module):
    """Shared weights W and, per task t, factors r_t (outputs) and s_t (inputs): the layer uses W * r_t s_t^T."""

    def __init__(self, weight: Tensor, tasks: int, selection: Selection, generator: torch.Generator | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        out_features, in_features = weight.shape[:2]

        def factors(size: int) -> nn.Parameter:
            if generator is None:
                return nn.Parameter(torch.ones(tasks, size))
            return nn.Parameter(torch.randint(0, 2, (tasks, size), generator=generator).float() * 2 - 1)

        self.r, self.s = factors(out_features), factors(in_features)
        self.selection = selection

    def mixed(self, alpha: Tensor) -> Tensor:
        """``R diag(alpha) S^T``: ``[out, in]``, one matrix product whatever the number of tasks."""
        k = len(alpha)
        return (self.r[:k].T * alpha) @ self.s[:k]


class RankOneLinear(RankOneLayer):
    def forward(self, x: Tensor) -> Tensor:
        alpha = self.selection.alpha
        if alpha is None:
            task = self.selection.task
            return F.linear(x * self.s[task], self.weight) * self.r[task]
        out = F.linear(x, self.weight * self.mixed(alpha))
        if self.selection.capture is not None:
            self.selection.capture.append((self, x, out))
        return out

    def alpha_gradients(self, x: Tensor, delta: Tensor, tasks: Tensor) -> Tensor:
        """``d objective_n / d alpha_j`` of this layer for every example n and task j in ``tasks``, (N x tasks):
        ``delta_n . ((W * r_j s_j^T) x_n) = (delta_n * r_j) . W (x_n * s_j)``, the per-example weight gradient
        ``delta_n x_n^T * W`` projected on task j's rank-one factor, as one matrix product per chunk."""
        r, s = self.r[tasks].detach(), self.s[tasks].detach()
        per_chunk = max(1, SCORE_ELEMENTS // (len(tasks) * max(self.weight.shape)))
        parts = []
        for inputs, deltas in zip(x.split(per_chunk), delta.split(per_chunk), strict=True):
            scaled = inputs[:, None, :] * s[None]  # N x tasks x in
            outputs = F.linear(scaled, self.weight.detach())  # N x tasks x out
            parts.append((outputs * r[None] * deltas[:, None, :]).sum(-1))
        return torch.cat(parts)


class RankOneConv2d(RankOneLayer):
    """A convolution whose kernel is scaled by ``r_t`` over output and ``s_t`` over input channels."""

    def __init__(self, weight: Tensor, tasks: int, selection: Selection, generator: torch.Generator | None,
                 stride: int, padding: int) -> None:  # fmt: skip
        super().__init__(weight, tasks, selection, generator)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.selection.alpha
        if alpha is None:
            task = self.selection.task
            scaled = F.conv2d(x * per_channel(self.s[task]), self.weight, stride=self.stride, padding=self.padding)
            return scaled * per_channel(self.r[task])
        kernel = self.weight * self.mixed(alpha)[:, :, None, None]
        return F.conv2d(x, kernel, stride=self.stride, padding=self.padding)


class TaskBatchNorm(nn.Module):
    """Batch norm with running statistics and an affine transform per task (BatchE keeps per-task parameters).

    Training normalises with the batch and updates the task's statistics; otherwise the task's (or each
    example's task's) statistics are used, and a superposition uses their alpha-weighted mean.
    """

    def __init__(self, num_features: int, tasks: int, selection: Selection, momentum: float = 0.1) -> None:
        super().__init__()
        self.selection, self.momentum = selection, momentum
        self.register_buffer("running_mean", torch.zeros(tasks, num_features))
        self.register_buffer("running_var", torch.ones(tasks, num_features))
        self.gamma = nn.Parameter(torch.ones(tasks, num_features))
        self.beta = nn.Parameter(torch.zeros(tasks, num_features))

    def forward(self, x: Tensor) -> Tensor:
        alpha, task = self.selection.alpha, self.selection.task
        if alpha is not None:
            k = len(alpha)
            mean, var = alpha @ self.running_mean[:k], alpha @ self.running_var[:k]
            gamma, beta = alpha @ self.gamma[:k], alpha @ self.beta[:k]
        elif self.training and isinstance(task, int):
            mean, var = batch_statistics(x, self.running_mean[task], self.running_var[task], self.momentum)
            gamma, beta = self.gamma[task], self.beta[task]
        else:
            mean, var = self.running_mean[task], self.running_var[task]
            gamma, beta = self.gamma[task], self.beta[task]
        return normalise(x, mean, var) * per_channel(gamma) + per_channel(beta)


class RankOneKit:
    def __init__(self, tasks: int, selection: Selection, seed: int, random_sign: bool, kaiming_normal: bool) -> None:
        self.tasks, self.selection, self.seed, self.random_sign = tasks, selection, seed, random_sign
        self.kaiming_normal = kaiming_normal
        self.layers: list[RankOneLayer] = []
        self.norms: list[TaskBatchNorm] = []

    def _generator(self) -> torch.Generator | None:
        return seeded_generator(self.seed, "batche-factors", len(self.layers)) if self.random_sign else None

    def _initialised(self, weight: Tensor) -> Tensor:
        """PyTorch's default init of W as drawn, or the authors' kaiming_normal (std sqrt(2 / fan_in))."""
        return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu") if self.kaiming_normal else weight

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        weight = self._initialised(nn.Linear(in_features, out_features, bias=False).weight.detach())
        layer = RankOneLinear(weight, self.tasks, self.selection, self._generator())
        self.layers.append(layer)
        return layer

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
        weight = self._initialised(nn.Conv2d(in_channels, out_channels, kernel_size, bias=False).weight.detach())
        layer = RankOneConv2d(weight, self.tasks, self.selection, self._generator(), stride, padding)
        self.layers.append(layer)
        return layer

    def norm(self, num_features: int) -> nn.Module:
        layer = TaskBatchNorm(num_features, self.tasks, self.selection)
        self.norms.append(layer)
        return layer

    def activation(self, num_features: int) -> nn.Module:
        return nn.ReLU()


@register_method("batche")
class BatchE(Method):
    relative_speed = {"fc": 0.7, "conv": 0.65}
    fusion_unavailable = "its factors' selection per task and One-Shot inference were not brought under vmap"
    version = "1"
    Config = BatchEConfig
    scenarios = frozenset({"GG", "GNs", "GNu"})
    config: BatchEConfig

    def build(self, context: BuildContext) -> nn.Module:
        self.labels = context.label_space
        self.classes = context.label_space.classes_per_task
        self.device = context.device
        self.given = context.scenario == "GG" and self.config.gg_head == "per_task"  # a plain linear head per task
        self.selection = Selection()
        tasks = context.label_space.num_tasks
        kaiming = self.config.weight_init == "kaiming_normal"
        kit = RankOneKit(tasks, self.selection, context.seed, self.config.factor_init == "random_sign", kaiming)
        backbone = context.make_backbone(kit)
        self.trunk = backbone.trunk
        if self.given:
            self.heads = nn.ModuleList(nn.Linear(backbone.feature_dim, self.classes) for _ in range(tasks))
            self.last = None
        else:
            outputs = self.config.output_size or self.classes
            if outputs < self.classes or (self.config.objective == "superfluous" and outputs == self.classes):
                raise ValueError(f"batche output_size {outputs} must exceed the {self.classes} classes for G")
            self.heads = nn.ModuleList()
            self.last = kit.linear(backbone.feature_dim, outputs)
        self.layers = kit.layers
        self.norms = kit.norms
        self.seen: list[int] = []
        self.training_weights = False
        return nn.ModuleDict({"trunk": self.trunk, "heads": self.heads, **({"last": self.last} if self.last else {})})

    def begin_segment(self, task: int | None, step: int) -> list[dict]:
        assert task is not None, "batche trains with the task given"
        if task not in self.seen:
            self.seen.append(task)
        self.selection.task = task
        factors = [p for layer in self.layers for p in (layer.r, layer.s)]
        train_weights = task == self.seen[0] and not self.config.random_weights
        for layer in self.layers:
            layer.weight.requires_grad_(train_weights)
        self.training_weights = train_weights
        rest = list(self.heads[task].parameters()) if self.given else []
        rest += [layer.weight for layer in self.layers] if train_weights else []
        rest += [p for norm in self.norms for p in (norm.gamma, norm.beta)]  # each task trains its own rows
        with_weights = train_weights and self.config.first_task_factor_lr == "weights"
        groups: list[dict] = [] if with_weights else [{"params": factors, "lr": self.config.factor_lr}]
        rest += factors if with_weights else []
        if rest:
            groups.append({"params": rest})
        return groups

    def _logits(self, x: Tensor, task: int) -> Tensor:
        features = self.trunk(x)
        return self.heads[task](features) if self.given else self.last(features)  # type: ignore[misc]

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        assert task is not None
        self.selection.task = task
        loss = F.cross_entropy(self._logits(x, task), y % self.classes)
        if self.config.weight_decay:
            loss = loss + self.config.weight_decay / 2 * sum(p.pow(2).sum() for p in self._trained_by(task))
        return loss

    def _trained_by(self, task: int) -> list[Tensor]:
        """What the segment of ``task`` trains: its rows of the factors and norms, its head, W on the first task."""
        trained = [factor[task] for layer in self.layers for factor in (layer.r, layer.s)]
        trained += [p[task] for norm in self.norms for p in (norm.gamma, norm.beta)]
        trained += list(self.heads[task].parameters()) if self.given else []
        return trained + ([layer.weight for layer in self.layers] if self.training_weights else [])

    def infer_task(self, x: Tensor) -> int:
        if len(self.seen) == 1:
            return self.seen[0]
        images = x[: self.config.inference_images] if self.config.inference_images else x
        order = torch.tensor(self.seen, device=self.device)

        def forward(alpha: Tensor, rows: Tensor | None) -> Tensor:
            full = torch.zeros(int(order.max()) + 1, device=self.device).index_add(0, order, alpha)
            self.selection.alpha = full
            try:
                return self.last(self.trunk(images))  # type: ignore[misc]
            finally:
                self.selection.alpha = None

        if self.config.inference == "lowest":
            return self.seen[int(self._objective_of_each_task(images).argmin())]
        with torch.enable_grad():
            index, _ = one_shot(forward, len(self.seen), self._objective, self.device)
        return self.seen[index]

    def _objective_of_each_task(self, images: Tensor) -> Tensor:
        """The mean objective on ``images`` under each seen task's factors, batched as BatchEnsemble does."""
        return self._objective_of_each_task_per_example(images).mean(1)

    @torch.no_grad()
    def _objective_of_each_task_per_example(self, images: Tensor) -> Tensor:
        """(tasks x images): the objective of every image under each seen task's factors."""
        n = len(images)
        values = []
        for tasks in torch.tensor(self.seen, device=self.device).split(max(1, TRIAL_ROWS // n)):
            self.selection.task = tasks.repeat_interleave(n)
            try:
                logits = self.last(self.trunk(images.repeat(len(tasks), *([1] * (images.dim() - 1)))))  # type: ignore[misc]
            finally:
                self.selection.task = 0
            values.append(comparable_per_example(self.config.objective, logits, self.classes).view(len(tasks), n))
        return torch.cat(values)

    def _batches_inference(self, batch_size: int) -> bool:
        """Whether inference runs over several test batches at once. Lowest: always (every image is tried on
        its own). One-Shot: when the examples of a batch do not mix (no batch norm), every layer is linear (so
        each example's alpha-gradient is a product of its input and delta), and few images decide."""
        if self.config.inference == "lowest":
            return True
        images = min(self.config.inference_images or batch_size, batch_size)
        linear = not self.norms and all(isinstance(layer, RankOneLinear) for layer in self.layers)
        return linear and images <= ONE_SHOT_BATCHED_IMAGES_AT_MOST

    def infer_tasks(self, batches: Sequence[Tensor]) -> list[int]:
        """``infer_task`` of every batch, over all their inference images at once (issue 15). One-Shot: one
        forward-backward pass at the uniform superposition for every image, then each layer's per-example
        alpha-gradients (``RankOneLinear.alpha_gradients``); a batch's objective is its images' mean. Lowest:
        every task's factors tried on every image, as ``infer_task`` does, in larger products."""
        if len(self.seen) == 1:
            return [self.seen[0]] * len(batches)
        n = self.config.inference_images
        images = torch.cat([x[:n] if n else x for x in batches])
        sizes = [min(n, len(x)) if n else len(x) for x in batches]
        if self.config.inference == "lowest":
            per_example = self._objective_of_each_task_per_example(images)
            return [self.seen[int(part.mean(1).argmin())] for part in per_example.split(sizes, 1)]
        gradient = self._alpha_gradients(images)
        return [self.seen[int((-part).mean(1).argmax())] for part in gradient.split(sizes, 1)]

    def _alpha_gradients(self, images: Tensor) -> Tensor:
        """(seen tasks x images): ``d objective_n / d alpha_j`` at alpha = 1/k over the seen tasks."""
        order = torch.tensor(self.seen, device=self.device)
        alpha = torch.zeros(int(order.max()) + 1, device=self.device)
        alpha[order] = 1.0 / len(order)
        captured: list[tuple[RankOneLinear, Tensor, Tensor]] = []
        self.selection.alpha, self.selection.capture = alpha, captured
        try:
            with torch.enable_grad():
                logits = self.last(self.trunk(images.detach().requires_grad_(True)))  # type: ignore[misc]
                total = objective_per_example(self.config.objective, logits, self.classes).sum()
                deltas = torch.autograd.grad(total, [out for _, _, out in captured])
        finally:
            self.selection.alpha, self.selection.capture = None, None
        gradient = torch.zeros(len(images), len(order), device=self.device)
        for (layer, inputs, _), delta in zip(captured, deltas, strict=True):
            gradient += layer.alpha_gradients(inputs.detach(), delta, order)
        return gradient.T

    def predict_many(self, batches: Sequence[Tensor], task: int | None) -> Iterable[Prediction]:
        batch_size = max((len(x) for x in batches), default=0)
        if task is not None or len(self.seen) <= 1 or not self._batches_inference(batch_size):
            return (self.predict(x, task) for x in batches)
        tasks = self.infer_tasks(batches)
        return (self._prediction_with(inferred, x) for inferred, x in zip(tasks, batches, strict=True))

    def _objective(self, logits: Tensor) -> Tensor:
        return objective_value(self.config.objective, logits, self.classes)

    def predict(self, x: Tensor, task: int | None) -> Prediction:
        if task is not None:
            self.selection.task = task
            with torch.no_grad():
                return Prediction(self._logits(x, task)[:, : self.classes])
        return self._prediction_with(self.infer_task(x), x)

    def _prediction_with(self, inferred: int, x: Tensor) -> Prediction:
        self.selection.task = inferred
        with torch.no_grad():
            logits = self._logits(x, inferred)[:, : self.classes]
        return spread_to_label_space(logits, inferred, self.labels)

    def storage(self) -> dict[str, int]:
        seen = self.seen
        factors = sum((layer.r.shape[1] + layer.s.shape[1]) * 4 * len(seen) for layer in self.layers)
        parts = {"weights": tensor_bytes(layer.weight for layer in self.layers), "factors": factors}
        if self.given:
            parts["heads"] = sum(tensor_bytes(self.heads[t].parameters()) for t in seen)
        if self.norms:  # running mean and variance, scale and shift, per task and channel
            parts["norms"] = sum(4 * norm.gamma.shape[1] * 4 * len(seen) for norm in self.norms)
        return parts
