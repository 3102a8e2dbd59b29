"""Compute estimates for dry runs: device-hours of a cell from measured throughput.

A cell's cost is its training samples times the backbone's training FLOPs per
sample (three forward passes' worth), divided by the rate the plain PyTorch
loop reached on that kind of backbone here, divided by the method's measured
speed relative to that loop; plus its evaluations (forward passes, three times
dearer when the task must be inferred), and whatever the method adds to them
(``Method.inference_seconds``). Each method states its own speed
(``Method.relative_speed``). The rates were measured on this
project's reference machine (2 CPU cores, no GPU) with ``bench/throughput.py``
and ``bench/conv_throughput.py``; on other hardware the estimate scales by how
much faster its plain loop is, which those scripts measure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.backbones import BackboneSpec, backbone_factory
from harness.cells import Cell
from harness.config import parse_config
from harness.training import TrainingConfig
from methods import METHODS
from methods.base import TorchKit
from scenarios import STREAMS
from scenarios.streams import StreamPlan

REFERENCE_DEVICE = "2 CPU cores (the reference machine)"
# Plain-loop training rates on the reference machine as (forward FLOPs per example, training FLOP/s), from
# samples/s x 3 x forward FLOPs: LeNet 300-100 at 39,900 samples/s and FC 784-1024-1024-10 at 10,900
# (bench/throughput.py); GEM's ResNet-18 on 32x32 images at 314 images/s (bench/conv_throughput.py). Small
# networks use the machine less well; rates between two measured sizes are interpolated in log space.
PLAIN_RATE = {"fc": ((5.32e5, 6.37e10), (3.72e6, 1.22e11)), "conv": ((1.09e8, 1.13e11), (1.09e8, 1.13e11))}
# Fused cells (harness/fusion.py): the aggregate training speed of K cells trained as one computation over the
# same K cells trained one after another, on one thread of the reference machine, by backbone kind, as (K, speed-up)
# points interpolated in log K; measured with `python bench/fusion.py cells` (README, "Fused cells"). No GPU has
# been lent to this project yet, so there is no CUDA row: `--fuse auto` fuses there unmeasured (a small network
# leaves a GPU launch-bound, which is what fusing removes).
FUSED_SPEEDUP = {"fc": ((1, 1.0), (2, 0.63), (4, 0.68), (8, 0.75)), "conv": ((1, 1.0),)}  # LeNet, standard
INFERENCE_FACTOR = 3.0  # evaluation without the task: a forward and a backward pass for task inference first
# Training holds at least this many float32 copies of the parameters: weights, gradients and the optimiser's state
# (RMSprop's square average and momentum buffer; Adam's two moments). Methods may hold more (masks, per-task copies).
TRAINING_COPIES = 4


@dataclass(frozen=True)
class Estimate:
    train_samples: int
    eval_samples: int
    seconds: float
    backbone_kind: str  # "fc" or "conv": what the method's speed is stated for
    speed_measured: bool  # False: the method states no speed on this backbone kind; the plain loop's was used
    eval_seconds: float = 0.0  # the part of ``seconds`` spent evaluating (task inference included)


@functools.lru_cache(maxsize=64)
def forward_flops(spec: BackboneSpec, input_shape: tuple[int, ...], outputs: int) -> float:
    """FLOPs (2 per multiply-add) of one example through the trunk and an ``outputs``-way head."""
    total = 0.0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += 2.0 * per_output * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += 2.0 * module.in_features * module.out_features

    with torch.device("meta"):
        model = _meta_model(spec, input_shape, outputs)
        for module in model.modules():
            module.register_forward_hook(count)
        model(torch.zeros(1, *input_shape))
    return total


def _meta_model(spec: BackboneSpec, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    """The trunk and an ``outputs``-way head on the meta device: shapes without memory, however large."""
    with torch.device("meta"):
        backbone = backbone_factory(spec, input_shape)(TorchKit())
        return nn.Sequential(backbone.trunk, nn.Linear(backbone.feature_dim, outputs))


@functools.lru_cache(maxsize=64)
def parameter_count(spec: BackboneSpec, input_shape: tuple[int, ...], outputs: int) -> int:
    return sum(p.numel() for p in _meta_model(spec, input_shape, outputs).parameters())


def plan_and_backbone(cell: Cell) -> tuple[StreamPlan, BackboneSpec]:
    """What a cell's stream will feed (shapes, steps, tests) and the network it builds, from its config alone."""
    stream_cls = STREAMS.get(cell.stream)
    plan = stream_cls.plan(parse_config(stream_cls.Config, cell.stream_config, cell.stream))
    return plan, parse_config(BackboneSpec, cell.backbone, "backbone")


def training_bytes(cell: Cell) -> tuple[int, int]:
    """(parameters, a lower bound of the bytes training them takes: TRAINING_COPIES float32 copies) of a cell's
    network, from its shapes alone; nothing is allocated."""
    plan, spec = plan_and_backbone(cell)
    parameters = parameter_count(spec, plan.input_shape, 10)
    return parameters, parameters * 4 * TRAINING_COPIES


def plain_rate(kind: str, flops: float) -> float:
    (small, small_rate), (large, large_rate) = PLAIN_RATE[kind]
    if flops <= small or small == large:
        return small_rate
    if flops >= large:
        return large_rate
    position = math.log(flops / small) / math.log(large / small)
    return math.exp(math.log(small_rate) + position * math.log(large_rate / small_rate))


def estimate_cell(cell: Cell) -> Estimate:
    plan, spec = plan_and_backbone(cell)
    training = parse_config(TrainingConfig, cell.training, "training")
    flops = forward_flops(spec, plan.input_shape, 10)
    train_samples = plan.train_steps * training.batch_size
    per_task = min(training.eval_samples or plan.test_per_task, plan.test_per_task)
    evaluations = -(-plan.segment_count // training.eval_every_segments)
    tasks_seen = [min(plan.num_tasks, math.ceil((i + 1) * plan.num_tasks / evaluations)) for i in range(evaluations)]
    eval_samples = sum(tasks_seen) * per_task
    if training.probe_every:
        eval_samples += (
            plan.train_steps
            // training.probe_every
            * min(training.probe_samples or plan.test_per_task, plan.test_per_task)
        )
    inference = 1.0 if cell.scenario == "GG" else INFERENCE_FACTOR
    method = METHODS.get(cell.method)
    speed = method.relative_speed.get(spec.kind)
    rate = plain_rate(spec.kind, flops)
    train_seconds = train_samples * 3 * flops / (rate * (speed or 1.0))
    config = parse_config(method.Config, cell.method_config, cell.method)
    batches_per_task = math.ceil(per_task / training.eval_batch_size)
    eval_seconds = eval_samples * flops * inference / rate
    eval_seconds += method.inference_seconds(config, cell.scenario, tasks_seen, batches_per_task, flops, spec.kind)
    seconds = train_seconds + eval_seconds
    return Estimate(train_samples, eval_samples, seconds, spec.kind, speed is not None, eval_seconds)


def fusion_pays(device: str, kind: str) -> bool:
    """Whether fused cells train faster than cells alone on this device (measured on the CPU; assumed on CUDA)."""
    if device == "cuda":
        return kind == "fc"
    return fused_speedup(kind, 2) > 1.0


def fused_speedup(kind: str, cells: int) -> float:
    """How much faster K fused cells train together than one after another (1 for one cell)."""
    points = FUSED_SPEEDUP.get(kind, ((1, 1.0),))
    if cells <= points[0][0]:
        return points[0][1]
    for (k0, s0), (k1, s1) in zip(points, points[1:], strict=False):
        if cells <= k1:
            position = math.log(cells / k0) / math.log(k1 / k0)
            return s0 + position * (s1 - s0)
    return points[-1][1]


def fused_seconds(estimate: Estimate, cells: int) -> float:
    """A cell's share of its fused group's time: its training at the group's speed-up, its own evaluations."""
    train = estimate.seconds - estimate.eval_seconds
    return train / fused_speedup(estimate.backbone_kind, cells) + estimate.eval_seconds
