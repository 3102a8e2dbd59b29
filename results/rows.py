"""The rows of the two tables, typed once: the runner builds them, and results.schema derives the Parquet schemas
from them, so a column cannot be written under one name and read under another."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EvalRow:
    """One measurement: a metric of one evaluated task (or of the whole model) at one point of training."""

    cell_id: str
    step: int  # optimiser steps taken when evaluated
    segment: int  # index of the segment being trained (or just finished)
    tasks_seen: int
    eval_task: int  # -1 for facts about the whole model (storage_bytes)
    metric: str  # one of results.schema.METRICS, or DIAGNOSTIC_PREFIX + a method's diagnostic
    value: float
    n: int  # test examples behind the value


@dataclass(frozen=True)
class RunRow:
    """One cell: what ran (its config, as JSON where nested), how it ended, what it cost and where it ran."""

    cell_id: str
    grid: str
    tags: str  # comma-separated
    method: str
    method_version: str
    method_config: str  # JSON
    stream: str
    stream_config: str  # JSON
    scenario: str
    backbone: str  # JSON
    training: str  # JSON
    seed: int
    status: str  # "ok" or "failed"
    error: str
    traceback: str
    started_at: float  # unix time
    wall_seconds: float
    setup_seconds: float  # building the stream and the model
    train_seconds: float  # wall - setup - eval: the steps and the method's own end-of-task work
    eval_seconds: float
    steps: int
    samples: int
    samples_per_second: float
    resumes: int  # how often the cell took up its checkpoint after an interruption (0: it ran through)
    peak_memory_bytes: int
    peak_memory_kind: str
    storage_bytes: int
    storage_parts: str  # JSON {part: bytes}
    device: str
    threads: int
    hostname: str
    pid: int
    git_sha: str
    harness_version: str
    torch_version: str
    python_version: str


def columns(row_type: type) -> list[tuple[str, type]]:
    """A row type's columns in order, as (name, Python type)."""
    builtins = {"str": str, "int": int, "float": float}
    return [(f.name, builtins[f.type] if isinstance(f.type, str) else f.type) for f in dataclasses.fields(row_type)]


def as_record(row: EvalRow | RunRow) -> dict[str, Any]:
    """The row as the plain dict the store writes (flat, so no deep copy is needed)."""
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
