"""Avalanche's strategies as harness methods: ``avalanche:Naive``, ``avalanche:EWC``, ... (the ``avalanche`` extra).

Each method runs the real Avalanche strategy class (``avalanche.training.EWC``
and so on), its own training loop and plugins included, on the batches the
harness draws: every segment becomes one Avalanche experience whose dataset
holds exactly the segment's batches in order, trained for one epoch without
shuffling. The harness keeps everything else: the streams, the scenario's
rules and label space, the optimiser, the learning-rate schedule, probes,
evaluation and the Parquet tables. So an Avalanche strategy and a harness
method in the same grid see the same examples in the same order and are
scored by the same code (``avalanche:Naive`` reproduces ``standard`` and
``multihead``; a test checks it).

Models are the harness's backbone (plain PyTorch layers) with one head of
``label_space.num_outputs`` outputs, or in GG one head per task as an Avalanche
``MultiTaskModule``, which Avalanche's multi-task plugins (LwF, ...) know.
Scenarios: GG, GNs and GNu. NNs hides the task boundaries that every
strategy's experiences need.

Two things of Avalanche 0.6.0 are worked around, both documented here:

- Importing it writes ``~/.avalanche/config.json`` (and wandb and matplotlib
  write ``~/.config`` and ``~/.cache``). The import runs with ``HOME`` pointed
  at ``$HARNESS_CACHE_DIR/avalanche-home``.
- Its ``SynapticIntelligencePlugin`` keeps ``param.detach().cpu().flatten()``
  as the "old" weights. On CPU that is a view of the live weights, not a copy,
  so every weight change it measures is 0: no importance, no penalty, and SI
  trains exactly as Naive. ``clone_weights: true`` (the default) copies them;
  ``false`` runs it as shipped. A test shows the first differs from Naive and
  the second equals it.

Each segment is held in memory as one tensor (steps x batch_size examples),
as Avalanche's tensor datasets are; ``max_segment_gib`` refuses a segment
larger than that before drawing it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from harness.cache import cache_dir
from methods.base import (
    BuildContext,
    Method,
    Prediction,
    SegmentData,
    TorchKit,
    register_method,
    tensor_bytes,
)

AVALANCHE_VERSION = "0.6.0"  # what the extra pins and these adapters were written against
INSTALL_HINT = "pip install -c constraints.txt -e '.[avalanche]'"


def avalanche_unavailable() -> str | None:
    """Why Avalanche cannot be used here, in one line, or None."""
    try:
        installed = importlib.metadata.version("avalanche-lib")
    except importlib.metadata.PackageNotFoundError:
        return f"the optional package avalanche-lib is not installed ({INSTALL_HINT})"
    if installed != AVALANCHE_VERSION:
        return f"avalanche-lib {installed} is installed; these adapters need {AVALANCHE_VERSION} ({INSTALL_HINT})"
    return None


@contextlib.contextmanager
def _home_in_cache() -> Iterator[None]:
    """Point HOME at the harness cache while Avalanche is imported: it writes its config under ~ on import."""
    home = cache_dir() / "avalanche-home"
    home.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = previous


_modules: dict[str, ModuleType] = {}


def import_avalanche() -> dict[str, ModuleType]:
    """Avalanche's training, plugins, models and dataset modules, imported once per process."""
    if not _modules:
        problem = avalanche_unavailable()
        if problem:
            raise RuntimeError(problem)
        from harness.torchvision_compat import import_torchvision

        import_torchvision()  # avalanche imports torchvision, which needs the shim on CPU-only torch
        with _home_in_cache(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import avalanche.benchmarks.classic as classic
            import avalanche.benchmarks.scenarios.dataset_scenario as scenarios
            import avalanche.benchmarks.utils as data
            import avalanche.models as models
            import avalanche.training as training
            import avalanche.training.plugins as plugins
        _modules.update(
            training=training, plugins=plugins, models=models, data=data, scenarios=scenarios, classic=classic
        )
    return _modules


def silent_evaluator() -> Any:
    """An EvaluationPlugin with no metrics and no loggers: the harness evaluates, Avalanche need not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No loggers specified"
        return import_avalanche()["training"].plugins.EvaluationPlugin(loggers=[])


def own_weight_copies(strategy: Any, saved: dict[str, Any]) -> None:
    """Replace SI's saved weights by copies where they are views of the live parameters (CPU)."""
    if next(strategy.model.parameters()).device.type != "cpu":
        return  # .cpu() of a CUDA parameter is already a copy
    for param_data in saved.values():
        param_data.data = param_data.data.clone()


def si_plugin_with_copies(si_lambda: float, eps: float) -> Any:
    """Avalanche's SynapticIntelligencePlugin, made to keep copies of the weights it compares (see module doc)."""
    from methods.avalanche_classes import CopyingSynapticIntelligencePlugin

    return CopyingSynapticIntelligencePlugin(si_lambda=si_lambda, eps=eps)


def make_task_heads_module(trunk: nn.Module, heads: nn.ModuleList) -> nn.Module:
    """A shared trunk and one head per task, as the MultiTaskModule Avalanche's plugins expect in GG."""
    from methods.avalanche_classes import TaskHeads

    return TaskHeads(trunk, heads)


def make_experience(x: Tensor, y: Tensor, index: int, task_label: int, with_task_labels: bool) -> Any:
    """One Avalanche experience holding exactly the segment's batches."""
    from methods.avalanche_classes import SegmentExperience

    y = y.cpu()
    dataset = import_avalanche()["data"]._make_taskaware_tensor_classification_dataset(
        x.cpu(), y, task_labels=task_label, targets=y
    )
    experience = SegmentExperience(dataset=dataset, current_experience=index, classes=y.unique().tolist())
    if with_task_labels:  # Avalanche routes a batch by task label only when the experience has them
        experience.task_labels = [task_label]
    return experience


TRANSIENT_STRATEGY_STATE = ("experience", "adapted_dataset", "dataloader", "mbatch", "mb_output", "loss")


def forget_segment(strategy: Any) -> None:
    """Drop what a strategy keeps of the segment it trained (its data, last batch and loss), which the next
    ``train`` call sets afresh: the plugins' state (buffers, importances, old models) stays. Done after every
    segment, so a run that checkpoints and one that does not hold the same state, and a checkpoint does not
    carry the segment's examples."""
    for name in TRANSIENT_STRATEGY_STATE:
        if name in vars(strategy):
            setattr(strategy, name, None)


def make_bridge_plugin() -> Any:
    """An Avalanche plugin that applies the harness's learning-rate schedule and reports each finished step."""
    from methods.avalanche_classes import HarnessBridge

    return HarnessBridge()


class AvalancheMethod(Method):
    """One Avalanche strategy class driven segment by segment; subclasses name it and its plugins' settings."""

    takes_weight_decay = True

    version = f"1+avalanche{AVALANCHE_VERSION}"
    scenarios = frozenset({"GG", "GNs", "GNu"})
    runs_own_loop = True
    fusion_unavailable = "Avalanche runs its own training loop"
    strategy_name: ClassVar[str]

    @classmethod
    def unavailable(cls) -> str | None:
        return avalanche_unavailable()

    def strategy_settings(self) -> dict[str, Any]:
        """Keyword arguments of the strategy class beyond model, optimiser and loop settings."""
        return {k: v for k, v in asdict(self.config).items() if k != "max_segment_gib"}

    def extra_plugins(self) -> list[Any]:
        return []

    def build(self, context: BuildContext) -> nn.Module:
        self.context = context
        self.task_aware = context.scenario == "GG"
        kit = TorchKit()
        backbone = context.make_backbone(kit)
        if self.task_aware:
            heads = nn.ModuleList(
                kit.linear(backbone.feature_dim, context.label_space.classes_per_task)
                for _ in range(context.label_space.num_tasks)
            )
            self.model = make_task_heads_module(backbone.trunk, heads)
        else:
            self.model = backbone.with_head(kit, context.label_space.num_outputs)
        self.bridge = make_bridge_plugin()
        self.strategy: Any = None
        self.segments = 0
        self.seen: set[int] = set()
        return self.model

    def strategy_class(self) -> Any:
        return getattr(import_avalanche()["training"], self.strategy_name)

    def _make_strategy(self, data: SegmentData) -> Any:
        cls = self.strategy_class()
        return cls(
            model=self.model,
            optimizer=data.make_optimizer(list(self.model.parameters())),
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=data.batch_size,
            train_epochs=1,
            eval_mb_size=data.batch_size,
            device=self.context.device,
            plugins=[*self.extra_plugins(), self.bridge],  # the bridge last: it reports finished steps
            evaluator=silent_evaluator(),
            **self.strategy_settings(),
        )

    def train_segment(self, data: SegmentData) -> None:
        limit = self.config.max_segment_gib * 2**30
        if data.nbytes > limit:
            raise ValueError(
                f"segment of {data.steps} x {data.batch_size} examples exceeds max_segment_gib="
                f"{self.config.max_segment_gib} (Avalanche holds a segment in memory)"
            )
        if self.strategy is None:
            self.strategy = self._make_strategy(data)
        task = data.task if data.task is not None else 0
        self.seen.add(task)
        x, y = data.draw()
        experience = make_experience(x, y, self.segments, task, self.task_aware)
        self.bridge.start(data)
        self.strategy.train(experience, eval_streams=[], shuffle=False)
        self.bridge.finish()
        forget_segment(self.strategy)
        self.segments += 1

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        if self.task_aware:
            assert task is not None
            return Prediction(self.model.forward_single_task(x, task))
        return Prediction(self.model(x))

    def storage(self) -> dict[str, int]:
        if not self.task_aware:
            return {"weights": tensor_bytes(self.model.parameters())}
        return {
            "trunk": tensor_bytes(self.model.trunk.parameters()),
            "heads": sum(tensor_bytes(self.model.heads[t].parameters()) for t in sorted(self.seen)),
        }


def segment_gib() -> Any:
    """The ``max_segment_gib`` setting every adapter has: refuse segments larger than this in memory."""
    return field(default=4.0, metadata={"min": 0.0})


@dataclass(frozen=True)
class NaiveConfig:
    """Fine-tuning, Avalanche's lower bound: no settings of its own."""

    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:Naive")
class AvalancheNaive(AvalancheMethod):
    relative_speed = {"fc": 0.88}
    Config = NaiveConfig
    strategy_name = "Naive"


@dataclass(frozen=True)
class EWCConfig:
    """avalanche.training.EWC (Kirkpatrick et al. 2017): Fisher over the whole experience at its end."""

    # strength of the EWC penalty (Avalanche's ewc_lambda)
    ewc_lambda: float = field(default=1000.0, metadata={"min": 0.0})
    mode: Literal["separate", "online"] = "separate"  # a Fisher per task (separate) or one running Fisher (online)
    decay_factor: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})  # online mode only
    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:EWC")
class AvalancheEWC(AvalancheMethod):
    relative_speed = {"fc": 0.43}
    Config = EWCConfig
    strategy_name = "EWC"

    def strategy_settings(self) -> dict[str, Any]:
        settings = super().strategy_settings()
        if self.config.mode == "separate":
            settings["decay_factor"] = None
        return settings


@dataclass(frozen=True)
class SynapticIntelligenceConfig:
    """avalanche.training.SynapticIntelligence (Zenke et al. 2017), with the CPU copy fix (module doc)."""

    # strength of the SI surrogate loss (c in Zenke et al.)
    si_lambda: float = field(default=1.0, metadata={"min": 0.0})
    eps: float = field(default=1e-7, metadata={"min": 0.0})  # damping of the path integral's denominator (xi)
    clone_weights: bool = True  # false: Avalanche 0.6.0 as shipped, a no-op on CPU
    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:SynapticIntelligence")
class AvalancheSynapticIntelligence(AvalancheMethod):
    relative_speed = {"fc": 0.62}
    Config = SynapticIntelligenceConfig
    strategy_name = "SynapticIntelligence"

    def strategy_settings(self) -> dict[str, Any]:
        if self.config.clone_weights:
            return {}  # the strategy class gets no SI plugin of its own: we pass Naive ours (below)
        return {"si_lambda": self.config.si_lambda, "eps": self.config.eps}

    def strategy_class(self) -> Any:
        # SynapticIntelligence is the supervised template plus its plugin: with copies, the template plus ours
        return import_avalanche()["training"].Naive if self.config.clone_weights else super().strategy_class()

    def extra_plugins(self) -> list[Any]:
        if not self.config.clone_weights:
            return []
        return [si_plugin_with_copies(self.config.si_lambda, self.config.eps)]


@dataclass(frozen=True)
class LwFConfig:
    """avalanche.training.LwF (Li & Hoiem 2017): distillation from the model as it was before the experience."""

    alpha: float = field(default=1.0, metadata={"min": 0.0})  # weight of the distillation loss
    temperature: float = field(default=2.0, metadata={"min": 0.0})  # softmax temperature of the distillation
    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:LwF")
class AvalancheLwF(AvalancheMethod):
    relative_speed = {"fc": 0.9}
    Config = LwFConfig
    strategy_name = "LwF"


@dataclass(frozen=True)
class GEMConfig:
    """avalanche.training.GEM (Lopez-Paz & Ranzato 2017): gradient projection against stored patterns."""

    # examples of each task kept for its gradient constraint
    patterns_per_exp: int = field(default=256, metadata={"min": 1})
    # margin added to the projected gradient (GEM's gamma)
    memory_strength: float = field(default=0.5, metadata={"min": 0.0})
    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:GEM")
class AvalancheGEM(AvalancheMethod):
    relative_speed = {"fc": 0.47}
    Config = GEMConfig
    strategy_name = "GEM"


@dataclass(frozen=True)
class ReplayConfig:
    """avalanche.training.Replay: an experience-balanced buffer, a memory batch beside every data batch."""

    mem_size: int = field(default=200, metadata={"min": 1})  # examples in the replay buffer, shared over tasks
    max_segment_gib: float = segment_gib()  # largest segment held in memory for Avalanche's dataset, in GiB


@register_method("avalanche:Replay")
class AvalancheReplay(AvalancheMethod):
    relative_speed = {"fc": 0.83}
    Config = ReplayConfig
    strategy_name = "Replay"
