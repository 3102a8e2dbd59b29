"""A cell: one training run, fully described by plain, JSON-ready values, identified by their hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True, eq=False)
class Cell:
    grid: str
    tags: tuple[str, ...]
    method: str
    method_version: str
    method_config: dict[str, Any]
    stream: str
    stream_config: dict[str, Any]
    scenario: str
    backbone: dict[str, Any]
    training: dict[str, Any]
    seed: int

    def identity(self) -> dict[str, Any]:
        """What determines the result. Grid name and tags do not: the same run in two grids is one cell."""
        return {
            "method": self.method,
            "method_version": self.method_version,
            "method_config": self.method_config,
            "stream": self.stream,
            "stream_config": self.stream_config,
            "scenario": self.scenario,
            "backbone": self.backbone,
            "training": self.training,
            "seed": self.seed,
        }

    @cached_property
    def cell_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    def label(self) -> str:
        return f"{self.method}/{self.stream}/{self.scenario}/seed{self.seed}"
