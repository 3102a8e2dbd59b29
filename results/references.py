"""Published numbers, each with its source, and how a leaderboard row is matched to one.

Only numbers the papers state in their text or tables are here; values read
off plots are not. Accuracies are fractions in [0, 1]; bytes are bytes (the
papers' "M" is 10^6 bytes: one ResNet-50 with its 1000-way head is 25,557,032
float32 weights, 102.23 MB). The PSP paper states no number in its text: its
results (Figures 2 to 6 and the table inside Figure 3) are plots and an image.

A reference applies to a row when the row's stream, scenario and method are the
reference's and the row's method settings include ``method_settings`` (and its
backbone is ``backbone``, when given). ``protocol`` is the protocol that
produced the number (:mod:`results.protocol`; settings left out are the
harness's defaults): a row under another protocol is shown beside it but
gets no difference. ``tasks`` is the task count the paper
measured after; a row with another count is still shown beside it, flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from results.protocol import PROTOCOL_SETTINGS

SUPSUP = "SupSup (Wortsman et al., NeurIPS 2020)"
VAN_DE_VEN = "van de Ven & Tolias 2019, Table 5, as quoted by SupSup sec. 4.2"
# their class-incremental PermutedMNIST: x/255 padded to 32x32, every task permuted, loss over the classes seen so far
VAN_DE_VEN_PROTOCOL = {"input_scaling": "unit", "pad_to": 32, "first_task_unpermuted": False, "loss_outputs": "seen"}


@dataclass(frozen=True)
class Reference:
    source: str  # paper, section, figure or table
    stream: str
    scenario: str
    method: str | None  # None: a number with no method of its own (one model's bytes)
    metric: str  # "accuracy" (final average over the tasks) or "storage_bytes"
    value: float
    tasks: int
    method_settings: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None  # a preset name, when the paper fixes it
    label: str = ""  # the paper's name for the row
    protocol: dict[str, Any] = field(default_factory=dict)  # protocol settings that differ from the harness's

    def required_protocol(self) -> dict[str, Any]:
        """Every protocol setting the number was produced under."""
        return {s.name: self.protocol.get(s.name, s.default) for s in PROTOCOL_SETTINGS}

    def matches(self, stream: str, scenario: str, method: str, settings: dict[str, Any], backbone: str) -> bool:
        if (stream, scenario, method) != (self.stream, self.scenario, self.method):
            return False
        if self.backbone is not None and backbone != self.backbone:
            return False
        return all(settings.get(key) == value for key, value in self.method_settings.items())


def _imagenet(method: str, label: str, accuracy: float | None, megabytes: float, **settings: Any) -> list[Reference]:
    where = f"{SUPSUP}, sec. 4.1, Figure 2-left (table)"
    common = {"stream": "split_imagenet", "scenario": "GG", "tasks": 100, "backbone": "resnet50", "label": label}
    rows = [
        Reference(
            where, method=method, metric="storage_bytes", value=megabytes * 1e6, **common, method_settings=settings
        )
    ]
    if accuracy is not None:
        rows.append(
            Reference(where, method=method, metric="accuracy", value=accuracy, **common, method_settings=settings)
        )
    return rows


REFERENCES: tuple[Reference, ...] = (
    *_imagenet("separate", "Upper Bound", 0.9255, 10222.81),
    *_imagenet("supsup", "SupSup (GG)", 0.8958, 195.18, keep_fraction=0.0369),
    *_imagenet("supsup", "SupSup (GG)", 0.8868, 100.98, keep_fraction=0.0168),
    *_imagenet("supsup", "SupSup (GG)", 0.8637, 65.50, keep_fraction=0.0093),
    *_imagenet("batche", "BatchE (GG)", 0.8150, 124.99, random_weights=True),
    *_imagenet(None, "Single Model (one ResNet-50)", None, 102.23),  # type: ignore[arg-type]
    Reference(
        f"{SUPSUP}, sec. 4.1 (Baselines)",
        "split_cifar100",
        "GG",
        "multihead",
        "accuracy",
        0.245,
        20,
        backbone="gem_resnet18",
        label="Lower Bound",
    ),
    Reference(
        f"{SUPSUP}, sec. 4.2 (Baselines & Ablations; appendix Table 7)",
        "permuted_mnist",
        "GNu",
        "supsup",
        "accuracy",
        0.9491,
        250,
        {"output_size": 500},
        backbone="fc_1024_1024",
        label="SupSup (GNu)",  # the text names no network; Figure 3's FC 1024-1024 with s = 500 is assumed
    ),
    Reference(
        VAN_DE_VEN,
        "permuted_mnist",
        "GNu",
        "ewc",
        "accuracy",
        0.3388,
        10,
        {"online": True},
        label="Online EWC",
        protocol=VAN_DE_VEN_PROTOCOL,
    ),
    Reference(
        VAN_DE_VEN, "permuted_mnist", "GNu", "si", "accuracy", 0.2931, 10, label="SI", protocol=VAN_DE_VEN_PROTOCOL
    ),
)


def references_for(stream: str, scenario: str, method: str, settings: dict[str, Any], backbone: str) -> list[Reference]:
    return [r for r in REFERENCES if r.matches(stream, scenario, method, settings, backbone)]
