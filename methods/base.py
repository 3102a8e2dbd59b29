"""The Method API: what the one training loop asks of a continual-learning method.

The runner owns the loop, the data, the optimiser and the results. A method
owns its modules and answers a few hooks with values (DESIGN.md):

    build(context) -> nn.Module            make modules through the layer kit
    begin_segment(task, step) -> params?   None keeps the optimiser; a list starts a fresh one
    loss(x, y, task) -> Tensor             the runner does backward and the optimiser step
    after_step(step) -> params?            e.g. SI's path integral; NNs mask allocation
    end_segment(task, replay)              e.g. EWC's Fisher, SupSup's mask freeze
    predict(x, task) -> Prediction         logits over the label space, inferred task
    storage() -> dict[str, int]            bytes needed to predict every task seen
    diagnostics() -> dict[str, float]      optional figures recorded beside each evaluation

A method that wraps another framework's training loop (Avalanche's strategies)
sets ``runs_own_loop`` and implements ``train_segment(SegmentData)`` instead of
``loss``: the runner still draws every batch, applies the scenario's rules,
schedules the learning rate, probes, evaluates and records; the method only
runs the optimiser steps, reporting each through ``SegmentData.after_step``.

Hooks that return parameters may return torch parameter groups instead
(dicts with ``params`` and, e.g., their own ``lr``), for methods whose parts
train at different rates.

``task`` is None wherever the scenario hides it. Scenario names are plain
strings here ("GG", "GNs", "GNu", "NNs") because methods never import
``scenarios``; a test ties them to the taxonomy's ``Scenario``.

Backbones are written once against a :class:`LayerKit`; a method that needs
other layers (PSP contexts, SupSup masks, BatchE factors) hands the backbone
factory its own kit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from harness.registry import Registry

SCENARIO_NAMES = ("GG", "GNs", "GNu", "NNs")  # the values of scenarios.taxonomy.Scenario (tests/test_registry.py)
LOSS_OUTPUTS = ("all", "seen", "current")  # which outputs a GNu training loss sees (the training config's loss_outputs)
BACKBONE_KINDS = ("fc", "conv")  # what a kit builds: linear layers only, or convolutional ones too


@dataclass(frozen=True)
class LabelSpace:
    """The outputs a method must produce: ``classes_per_task`` per task when shared, all of them when not."""

    num_tasks: int
    classes_per_task: int
    shared: bool

    @property
    def num_outputs(self) -> int:
        return self.classes_per_task if self.shared else self.num_tasks * self.classes_per_task


class LayerKit(Protocol):
    """The layers a backbone is made of; each method may supply its own kit.

    Fully connected backbones use ``linear`` and ``activation``; convolutional
    ones (the ResNets) also ``conv2d`` and ``norm``. A method whose kit lacks
    the conv layers leaves ``"conv"`` out of its ``backbones``.
    """

    def linear(self, in_features: int, out_features: int) -> nn.Module: ...

    def activation(self, num_features: int) -> nn.Module: ...

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module: ...

    def norm(self, num_features: int) -> nn.Module: ...


class TorchKit:
    """Plain PyTorch layers: what weight-training methods use."""

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        return nn.Linear(in_features, out_features)

    def activation(self, num_features: int) -> nn.Module:
        return nn.ReLU()

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)  # a norm follows

    def norm(self, num_features: int) -> nn.Module:
        return nn.BatchNorm2d(num_features)


@dataclass
class Backbone:
    """A feature extractor built by the harness from a kit; heads are the method's business."""

    trunk: nn.Module
    feature_dim: int

    def with_head(self, kit: LayerKit, outputs: int) -> nn.Sequential:
        """The trunk followed by one ``outputs``-way linear head from ``kit``: the network most methods train."""
        return nn.Sequential(self.trunk, kit.linear(self.feature_dim, outputs))


BackboneFactory = Callable[[LayerKit], Backbone]
TrainableParams = Sequence[nn.Parameter] | Sequence[dict]
"""What a hook returns to start a fresh optimiser: parameters, or torch parameter groups."""
ReplaySampler = Callable[[int], tuple[Tensor, Tensor]]
"""``sample(n) -> (x, y)``: n training examples of the segment that just ended, labels in the label space."""


@dataclass(frozen=True)
class SegmentData:
    """One segment's training batches, for a method that runs its own framework's loop over them.

    ``draw()`` returns ``x`` and ``y``: the ``steps`` batches of ``batch_size``
    examples the runner's loop would have drawn, in that order, concatenated,
    labels in the label space. ``nbytes`` is what ``x`` will take, known before
    drawing. The method must take exactly one optimiser step per batch, in
    order, and call ``after_step(loss)`` after each (the runner counts, probes
    and checks the loss there). ``schedule(optimizer, i)`` sets every group's
    learning rate to the runner's schedule for step ``i`` of the segment.
    """

    task: int | None
    batch_size: int
    steps: int
    nbytes: int
    draw: Callable[[], tuple[Tensor, Tensor]]
    make_optimizer: Callable[[TrainableParams], torch.optim.Optimizer]
    schedule: Callable[[torch.optim.Optimizer, int], None]
    after_step: Callable[[Tensor], None]


@dataclass(frozen=True)
class BuildContext:
    """Everything a method may know when it builds its modules."""

    scenario: str
    label_space: LabelSpace
    make_backbone: BackboneFactory
    input_shape: tuple[int, ...]
    device: torch.device
    seed: int
    loss_outputs: str = "all"  # one of LOSS_OUTPUTS; only a method that declares it in loss_outputs gets another


class TrainingOutputs:
    """The outputs a k*l-way training loss may see, by the protocol's ``loss_outputs`` (GNu only).

    ``all``: every output, classes of tasks not yet seen included. ``seen``: the classes of the tasks seen so far
    (van de Ven & Tolias 2019's "active classes", their class-incremental protocol). ``current``: the current
    task's classes only. Other outputs get a logit of -inf, so they take no probability and no gradient, the
    same as slicing them away. The mask changes only when a new task arrives, so no step syncs with the device.
    """

    def __init__(self, labels: LabelSpace, rule: str) -> None:
        if rule not in LOSS_OUTPUTS:
            raise ValueError(f"loss_outputs must be one of {', '.join(LOSS_OUTPUTS)}, got {rule!r}")
        self.labels = labels
        self.rule = rule
        self.seen: set[int] = set()
        self.task: int | None = None
        self.mask: Tensor | None = None

    def restrict(self, logits: Tensor, task: int | None) -> Tensor:
        if self.rule == "all" or self.labels.shared or task is None:
            return logits
        if self.mask is None or task != self.task or task not in self.seen:
            self.seen.add(task)
            self.task = task
            tasks = sorted(self.seen) if self.rule == "seen" else [task]
            mask = torch.zeros(self.labels.num_tasks, self.labels.classes_per_task, dtype=torch.bool)
            mask[tasks] = True
            self.mask = mask.flatten().to(logits.device)
        return logits.masked_fill(~self.mask, float("-inf"))


@dataclass
class Prediction:
    """Logits over the label space, and the task the method inferred for each example, if it infers one."""

    logits: Tensor
    task: Tensor | None = None


class Method(ABC):
    """Base class of every method. Subclasses set the four class attributes and the abstract hooks."""

    name: ClassVar[str]
    version: ClassVar[str]
    Config: ClassVar[type]
    scenarios: ClassVar[frozenset[str]]
    backbones: ClassVar[frozenset[str]] = frozenset(BACKBONE_KINDS)  # the backbone kinds its layer kit can build
    runs_own_loop: ClassVar[bool] = False  # True: train_segment runs the steps instead of the runner's loss/backward
    loss_outputs: ClassVar[frozenset[str]] = frozenset({"all"})  # the GNu training-loss protocols it implements
    # True where the tensors it trains hold no finished task's state (only shared weights, or the current task's
    # own parameters): L2 decay (training weight_decay) would otherwise erode the rows a step leaves at zero gradient
    takes_weight_decay: ClassVar[bool] = False
    # The dry run's cost model: training speed relative to the runner's plain loop on the same network, per backbone
    # kind, as measured by bench/throughput.py ("fc": FC 1024-1024) and bench/conv_throughput.py ("conv": GEM's
    # ResNet-18). Never inherited (register_method reads the class's own): a kind left out is estimated at the plain
    # loop's speed, and the dry run says so.
    relative_speed: ClassVar[Mapping[str, float]] = {}
    # Fused cells (harness/fusion.py): None where cells of this method that differ only in seed may train as one
    # batched computation, which needs ``fused_entry``; else why not, as the dry run prints it. A subclass inherits it.
    fusion_unavailable: ClassVar[str | None] = "it declares no fused entry (Method.fused_entry)"
    # Settings whose values may differ within a fused group: read only outside the fused entry's forward pass
    # (a penalty's strength, what end_segment does), never by the entry's forward or the module's shapes
    fusable_settings: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def inference_seconds(
        cls,
        config: Any,
        scenario: str,
        tasks_seen: Sequence[int],
        batches_per_task: int,
        flops: float,
        kind: str = "fc",
    ) -> float:
        """Evaluation time beyond the forward passes the dry run counts for every method (0 unless it grows with
        something else, as SupSup's One-Shot does with the masks stored); ``tasks_seen`` per evaluation."""
        return 0.0

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (e.g. an optional package is missing), or None. Checked before any work."""
        return None

    config: Any  # an instance of the class's ``Config``; each method annotates its own (``config: EWCConfig``)

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def build(self, context: BuildContext) -> nn.Module:
        """Make every module and return their root (the runner switches it between train and eval)."""

    def begin_segment(self, task: int | None, step: int) -> TrainableParams | None:
        """Called when a segment starts (once, with task None, in NNs). Return parameters to start a fresh optimiser."""
        return None

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        """The scalar to minimise on this batch (every method but those that run their own loop)."""
        raise NotImplementedError(f"method {self.name} defines neither loss() nor runs_own_loop")

    def train_segment(self, data: SegmentData) -> None:
        """Run the segment's optimiser steps in another framework's loop (only where ``runs_own_loop``)."""
        raise NotImplementedError(f"method {self.name} sets runs_own_loop but defines no train_segment()")

    def fused_entry(self, task: int | None) -> nn.Module | None:
        """For fused cells: the submodule of the root that every ``loss`` of this task runs first, once, on the
        whole training batch (the network, or its trunk), whose forward depends on nothing but its input, its
        parameters and its buffers; the runner runs it for all the group's cells at once (harness/fusion.py)."""
        return None

    def after_step(self, step: int) -> TrainableParams | None:
        """Called after every optimiser step; gradients are still in ``.grad``. Must not sync with the device."""
        return None

    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        """Called when a segment ends (never in NNs, where boundaries are hidden)."""
        return None

    @abstractmethod
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        """Logits over the label space. Use ``torch.no_grad`` unless inference needs gradients."""

    def predict_many(self, batches: Sequence[Tensor], task: int | None) -> Iterable[Prediction]:
        """``predict`` of each of several test batches, in order: all of task ``task`` when it is given; when it
        is hidden (None), batches of any tasks, mixed. A method whose per-batch work batches across them
        (SupSup's One-Shot) overrides this; the results must be those of ``predict``, batch by batch. Yield
        them lazily where they are large (k*l logits): the evaluator scores each one as it comes."""
        return (self.predict(x, task) for x in batches)

    @abstractmethod
    def storage(self) -> dict[str, int]:
        """Bytes needed to predict every task seen so far, by part (weights, masks, heads, ...)."""

    def diagnostics(self) -> dict[str, float]:
        """Figures worth keeping beside each evaluation (e.g. masks allocated); recorded as metrics of task -1."""
        return {}


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="harness.methods")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: ``@register_method("ewc")``. Checks the class declares what the harness needs."""

    def add(cls: type[Method]) -> type[Method]:
        for attribute in ("version", "Config", "scenarios"):
            if not hasattr(cls, attribute):
                raise TypeError(f"method {name!r} ({cls.__qualname__}) must define the class attribute {attribute!r}")
        unknown = set(cls.scenarios) - set(SCENARIO_NAMES)
        if unknown:
            raise TypeError(f"method {name!r} declares unknown scenarios {sorted(unknown)}; known: {SCENARIO_NAMES}")
        hook = "train_segment" if getattr(cls, "runs_own_loop", False) else "loss"
        if getattr(cls, hook) is getattr(Method, hook):
            raise TypeError(f"method {name!r} ({cls.__qualname__}) must define {hook}()")
        cls.name = name
        cls.relative_speed = dict(vars(cls).get("relative_speed", {}))  # a subclass measures its own
        if cls.fusion_unavailable is None and cls.fused_entry is Method.fused_entry:
            raise TypeError(f"method {name!r} ({cls.__qualname__}) says it can be fused but defines no fused_entry()")
        return METHODS.register(name)(cls)

    return add


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
