"""Backbones, written once against the layer kit that each method supplies.

A backbone is a trunk (input -> features); heads belong to methods. Specs are
small frozen dataclasses so they hash into the cell id; presets name the
papers' networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from harness.config import ConfigError, parse_config
from harness.registry import did_you_mean
from methods.base import Backbone, BackboneFactory, LayerKit


@dataclass(frozen=True)
class BackboneSpec:
    name: Literal["fc"] = "fc"
    hidden: tuple[int, ...] = field(default=(1024, 1024), metadata={"min": 1})  # widths of the hidden layers


PRESETS: dict[str, BackboneSpec] = {
    "fc_1024_1024": BackboneSpec("fc", (1024, 1024)),  # PSP sec. 4.1, SupSup sec. 4.2
    "lenet_300_100": BackboneSpec("fc", (300, 100)),  # LeCun et al. 1998, SupSup sec. 4.2
    **{f"fc_{w}_{w}": BackboneSpec("fc", (w, w)) for w in (128, 256, 512, 2048)},  # PSP Figure 2's width sweep
}


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


def backbone_factory(spec: BackboneSpec, input_shape: tuple[int, ...]) -> BackboneFactory:
    def make(kit: LayerKit) -> Backbone:
        return Backbone(FCTrunk(kit, math.prod(input_shape), spec.hidden), spec.hidden[-1])

    return make


def is_small(spec: BackboneSpec) -> bool:
    """Small enough to share a GPU with other cells (every FC network is)."""
    return spec.name == "fc"
