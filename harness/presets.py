"""Backbone specs and the presets that name the papers' networks, without torch.

The harness builds networks from a spec (:mod:`harness.backbones`); the report
names a run's backbone by its preset (:mod:`results.derive`), and results code
must not import torch, so the table lives here, once, for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal


@dataclass(frozen=True)
class BackboneSpec:
    name: Literal["fc", "resnet18", "resnet50"] = "fc"
    hidden: tuple[int, ...] = field(default=(1024, 1024), metadata={"min": 1})  # fc: widths of the hidden layers
    width: int = field(default=64, metadata={"min": 1})  # resnets: channels of the first stage (GEM's nf)

    def __post_init__(self) -> None:
        if self.name == "fc" and not self.hidden:
            raise ValueError("hidden must list at least one width for an fc backbone (its last width feeds the head)")

    @property
    def kind(self) -> str:
        """The layer kinds it needs from a kit: ``fc`` (linear, activation) or ``conv`` (also conv2d, norm)."""
        return "fc" if self.name == "fc" else "conv"

    @property
    def network(self) -> tuple[Any, ...]:
        """The settings that decide the network. An FC spec carries an unused width and a ResNet spec unused
        hidden widths; they never tell two networks apart."""
        return (self.name, self.hidden) if self.name == "fc" else (self.name, self.width)


PRESETS: dict[str, BackboneSpec] = {
    "fc_1024_1024": BackboneSpec("fc", (1024, 1024)),  # PSP sec. 4.1, SupSup sec. 4.2
    "lenet_300_100": BackboneSpec("fc", (300, 100)),  # LeCun et al. 1998, SupSup sec. 4.2
    **{f"fc_{w}_{w}": BackboneSpec("fc", (w, w)) for w in (128, 256, 512, 2048)},  # PSP Figure 2's width sweep
    "gem_resnet18": BackboneSpec("resnet18", width=20),  # GEM's reduced ResNet-18 (nf=20): SplitCIFAR100
    "resnet18": BackboneSpec("resnet18", width=64),  # ResNet-18 for 32x32 inputs: iCIFAR
    "resnet50": BackboneSpec("resnet50", width=64),  # the standard ResNet-50 (He et al. 2016): SplitImageNet
}


def spec_from_dict(raw: Mapping[str, Any]) -> BackboneSpec:
    """The spec of a cell's backbone mapping or of a runs row's JSON (hidden widths as a list). Keys the spec
    does not have are ignored, so that a report still reads rows that other versions wrote."""
    known = {f.name for f in fields(BackboneSpec)}
    return BackboneSpec(**{k: tuple(v) if k == "hidden" else v for k, v in raw.items() if k in known})


def backbone_name(spec: BackboneSpec) -> str:
    """The preset name of a spec's network, else a short description: ``fc_16``, ``resnet18_w32``."""
    for name, preset in PRESETS.items():
        if preset.network == spec.network:
            return name
    if spec.name == "fc":
        return "fc_" + "_".join(str(h) for h in spec.hidden)
    return spec.name if spec.width == BackboneSpec.width else f"{spec.name}_w{spec.width}"
