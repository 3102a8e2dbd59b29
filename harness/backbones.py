"""Backbones, written once against the layer kit that each method supplies.

A backbone is a trunk (input -> features); heads belong to methods. Specs are
small frozen dataclasses so they hash into the cell id; presets name the
papers' networks (both in :mod:`harness.presets`, which the report reads
without torch).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from harness.config import ConfigError, parse_config
from harness.presets import PRESETS, BackboneSpec
from harness.registry import did_you_mean
from methods.base import Backbone, BackboneFactory, LayerKit


def parse_backbone(raw: Any, where: str) -> BackboneSpec:
    """A preset name (``lenet_300_100``) or a mapping (``{name: fc, hidden: [300, 100]}``)."""
    if isinstance(raw, str):
        if raw not in PRESETS:
            raise ConfigError(
                f"{where}: unknown backbone {raw!r}{did_you_mean(raw, list(PRESETS))}; "
                f"presets: {', '.join(PRESETS)}, or a mapping like {{name: fc, hidden: [300, 100]}}"
            )
        return PRESETS[raw]
    if isinstance(raw, dict):
        return parse_config(BackboneSpec, raw, f"{where}, backbone")
    raise ConfigError(f"{where}: backbone must be a preset name or a mapping, got {raw!r}")


class FCTrunk(nn.Module):
    """Flatten, then Linear + activation per hidden width: LeNet 300-100, FC 1024-1024 and the like."""

    def __init__(self, kit: LayerKit, in_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for out in hidden:
            layers += [kit.linear(width, out), kit.activation(out)]
            width = out
        self.layers = nn.Sequential(*layers)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.layers(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016), projected when the shape changes."""

    def __init__(self, kit: LayerKit, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = kit.conv2d(in_channels, channels, 3, stride, 1)
        self.norm1 = kit.norm(channels)
        self.act1 = kit.activation(channels)
        self.conv2 = kit.conv2d(channels, channels, 3, 1, 1)
        self.norm2 = kit.norm(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(kit.conv2d(in_channels, channels, 1, stride, 0), kit.norm(channels))
        self.act2 = kit.activation(channels)

    def forward(self, x):  # noqa: ANN001, ANN201
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet18Trunk(nn.Module):
    """ResNet-18 for small images, as GEM and BatchE use it: a 3x3 stem, four stages of two blocks
    (width, 2, 4 and 8 times width; strides 1, 2, 2, 2), global average pooling."""

    def __init__(self, kit: LayerKit, in_channels: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [kit.conv2d(in_channels, width, 3, 1, 1), kit.norm(width), kit.activation(width)]
        channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**stage
            layers += [BasicBlock(kit, channels, out, stride), BasicBlock(kit, out, out, 1)]
            channels = out
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.layers(x)


class MaxPool2d(nn.MaxPool2d):
    """Max pooling; complex feature maps (PSP's complex networks) are pooled part by part, as their
    nonlinearities act, since complex numbers have no order."""

    def forward(self, x):  # noqa: ANN001, ANN201
        if x.is_complex():
            return torch.complex(super().forward(x.real), super().forward(x.imag))
        return super().forward(x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand by 4; residual connection."""

    expansion = 4

    def __init__(self, kit: LayerKit, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out = channels * self.expansion
        self.body = nn.Sequential(
            kit.conv2d(in_channels, channels, 1, 1, 0),
            kit.norm(channels),
            kit.activation(channels),
            kit.conv2d(channels, channels, 3, stride, 1),
            kit.norm(channels),
            kit.activation(channels),
            kit.conv2d(channels, out, 1, 1, 0),
            kit.norm(out),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out:
            self.shortcut = nn.Sequential(kit.conv2d(in_channels, out, 1, stride, 0), kit.norm(out))
        self.act = kit.activation(out)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.act(self.body(x) + self.shortcut(x))


class ResNet50Trunk(nn.Module):
    """ResNet-50 for ImageNet-size images: a 7x7 stride-2 stem and 3x3 max pool, stages of 3, 4, 6 and 3
    bottlenecks (width, 2, 4 and 8 times width; strides 1, 2, 2, 2), global average pooling; 4*8*width features."""

    def __init__(self, kit: LayerKit, in_channels: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            kit.conv2d(in_channels, width, 7, 2, 3),
            kit.norm(width),
            kit.activation(width),
            MaxPool2d(3, 2, 1),
        ]
        channels = width
        for stage, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2), strict=True)):
            out = width * 2**stage
            for block in range(blocks):
                layers.append(Bottleneck(kit, channels, out, stride if block == 0 else 1))
                channels = out * Bottleneck.expansion
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.layers(x)


def build_backbone(spec: BackboneSpec, input_shape: tuple[int, ...], kit: LayerKit) -> Backbone:
    if spec.name == "resnet18":
        return Backbone(ResNet18Trunk(kit, input_shape[0], spec.width), 8 * spec.width)
    if spec.name == "resnet50":
        return Backbone(ResNet50Trunk(kit, input_shape[0], spec.width), 8 * spec.width * Bottleneck.expansion)
    return Backbone(FCTrunk(kit, math.prod(input_shape), spec.hidden), spec.hidden[-1])


def backbone_factory(spec: BackboneSpec, input_shape: tuple[int, ...]) -> BackboneFactory:
    """The backbone builder a method calls with its layer kit; a partial, so a method that keeps it pickles
    (checkpoints pickle the method whole)."""
    return functools.partial(build_backbone, spec, input_shape)


def is_small(spec: BackboneSpec) -> bool:
    """Small enough to share a GPU with other cells: every FC network, and GEM's narrow ResNet-18."""
    return spec.name == "fc" or (spec.name == "resnet18" and spec.width <= 20)
