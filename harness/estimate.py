"""Compute estimates for dry runs: device-hours of a cell from measured throughput.

A cell's cost is its training samples times the backbone's training FLOPs per
sample (three forward passes' worth), divided by the rate the plain PyTorch
loop reached on that kind of backbone here, divided by the method's measured
speed relative to that loop; plus its evaluations (forward passes, three times
dearer when the task must be inferred). The rates were measured on this
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
from harness.runner import TrainingConfig
from methods.base import TorchKit
from scenarios import STREAMS

REFERENCE_DEVICE = "2 CPU cores (the reference machine)"
# Plain-loop training rates on the reference machine as (forward FLOPs per example, training FLOP/s), from
# samples/s x 3 x forward FLOPs: LeNet 300-100 at 39,900 samples/s and FC 784-1024-1024-10 at 10,900
# (bench/throughput.py); GEM's ResNet-18 on 32x32 images at 314 images/s (bench/conv_throughput.py). Small
# networks use the machine less well; rates between two measured sizes are interpolated in log space.
PLAIN_RATE = {"fc": ((5.32e5, 6.37e10), (3.72e6, 1.22e11)), "conv": ((1.09e8, 1.13e11), (1.09e8, 1.13e11))}
# Method speed relative to the plain loop on the same model (bench/throughput.py on FC 1024-1024, and
# bench/conv_throughput.py on GEM's ResNet-18; Avalanche's strategies: bench/avalanche_peer.py and
# bench/throughput.py, FC 1024-1024 in GNs); methods not listed count as 1.
METHOD_SPEED = {
    "fc": {
        "standard": 0.88, "multihead": 0.98, "ewc": 0.81, "si": 0.85, "psp_binary": 0.85, "psp_complex": 0.30,
        "psp_rotation": 0.46, "psp_onepower": 0.30, "psp_fast": 0.31, "psp_fast_localmix": 0.31, "supsup": 0.76,
        "batche": 0.70, "hopsupsup": 0.50, "avalanche:Naive": 0.88, "avalanche:EWC": 0.43,
        "avalanche:SynapticIntelligence": 0.62, "avalanche:LwF": 0.90, "avalanche:GEM": 0.47, "avalanche:Replay": 0.83,
    },
    "conv": {
        "standard": 1.00, "multihead": 0.94, "ewc": 0.63, "si": 0.89, "psp_binary": 0.75, "psp_complex": 0.20,
        "psp_onepower": 0.21, "supsup": 0.71, "batche": 0.65, "separate": 0.92, "separate_heads": 1.46,
    },
}  # fmt: skip
INFERENCE_FACTOR = 3.0  # evaluation without the task: a forward and a backward pass for task inference first
# SupSup's One-Shot superposes every stored mask for each test batch: 0.236 s per batch for 1,000 LeNet 300-100
# masks (bench/supsup.py inference), i.e. per batch and mask, in proportion to the weights (FLOPs) of the net.
MASK_SECONDS_PER_FLOP = 0.236 / 1000 / 5.32e5


@dataclass(frozen=True)
class Estimate:
    train_samples: int
    eval_samples: int
    seconds: float


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
        backbone = backbone_factory(spec, input_shape)(TorchKit())
        model = nn.Sequential(backbone.trunk, nn.Linear(backbone.feature_dim, outputs))
        for module in model.modules():
            module.register_forward_hook(count)
        model(torch.zeros(1, *input_shape))
    return total


def plain_rate(kind: str, flops: float) -> float:
    (small, small_rate), (large, large_rate) = PLAIN_RATE[kind]
    if flops <= small or small == large:
        return small_rate
    if flops >= large:
        return large_rate
    position = math.log(flops / small) / math.log(large / small)
    return math.exp(math.log(small_rate) + position * math.log(large_rate / small_rate))


def estimate_cell(cell: Cell) -> Estimate:
    stream_cls = STREAMS.get(cell.stream)
    plan = stream_cls.plan(parse_config(stream_cls.Config, cell.stream_config, cell.stream))
    training = parse_config(TrainingConfig, cell.training, "training")
    spec = parse_config(BackboneSpec, cell.backbone, "backbone")
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
    speed = METHOD_SPEED[spec.kind].get(cell.method, 1.0)
    rate = plain_rate(spec.kind, flops)
    seconds = train_samples * 3 * flops / (rate * speed) + eval_samples * flops * inference / rate
    if cell.method == "supsup" and cell.scenario != "GG":  # One-Shot's cost grows with the masks stored
        batches_per_task = math.ceil(per_task / training.eval_batch_size)
        seconds += sum(k * batches_per_task * k for k in tasks_seen) * MASK_SECONDS_PER_FLOP * flops
    return Estimate(train_samples, eval_samples, seconds)
