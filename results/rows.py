"""The rows of the two tables, typed once: the runner builds them, and results.schema derives the Parquet schemas
from them, so a column cannot be written under one name and read under another."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def column(description: str, unit: str = "") -> Any:
    """A column's description and unit, written into each Parquet file's field metadata and OUT/README.md."""
    return dataclasses.field(metadata={"description": description, "unit": unit})


@dataclass(frozen=True)
class EvalRow:
    """One measurement: a metric of one evaluated task (or of the whole model) at one point of training."""

    cell_id: str = column("the cell measured: its runs row has the same cell_id")
    step: int = column("optimiser steps taken when evaluated", "steps")
    segment: int = column("index of the segment being trained, or just finished (a task of a discrete stream)")
    tasks_seen: int = column("tasks trained on so far", "tasks")
    eval_task: int = column("the task whose test set was used; -1 for facts about the whole model (storage_bytes)")
    metric: str = column("one of the harness's metrics (OUT/README.md lists them), or diagnostic:<name> of a method")
    value: float = column(
        "the measurement: accuracies are fractions in [0, 1] (the report prints percent)", "see the metric"
    )
    n: int = column("examples behind the value (train_loss: the batch; storage_bytes: 0)", "examples")


@dataclass(frozen=True)
class RunRow:
    """One cell: what ran (its config, as JSON where nested), how it ended, what it cost and where it ran."""

    cell_id: str = column("hash of the cell's config: the same config always has the same id")
    grid: str = column("the grid it was run from")
    tags: str = column("the grid's experiment tags it belongs to, comma-separated")
    method: str = column("registered method name")
    method_version: str = column("the method's version: a change of its maths gets a new version and new cells")
    method_config: str = column("the method's settings as JSON (DuckDB: method_config->>'$.name')", "JSON")
    stream: str = column("registered stream name")
    stream_config: str = column("the stream's settings as JSON", "JSON")
    scenario: str = column("GG, GNs, GNu or NNs (SupSup Table 1): task identity in training and testing")
    backbone: str = column("the network as JSON: name, width or hidden sizes", "JSON")
    training: str = column("optimiser, learning rate, batch size, evaluation schedule, protocol, as JSON", "JSON")
    seed: int = column("the cell's seed: data order, initialisation and the stream's tasks derive from it")
    status: str = column("ok, or failed (error and traceback say why; a failed cell is rerun by the next run)")
    error: str = column("the exception in one line, empty when ok")
    traceback: str = column("the last 8,000 characters of the traceback, empty when ok")
    started_at: datetime = column("when the cell's last attempt started (a resumed cell: when it was taken up)", "UTC")
    wall_seconds: float = column("wall time of the cell over all its attempts", "s")
    setup_seconds: float = column("building the stream and the model", "s")
    train_seconds: float = column("wall - setup - eval: the steps and the method's own end-of-task work", "s")
    eval_seconds: float = column("evaluations, task inference included", "s")
    steps: int = column("optimiser steps taken", "steps")
    samples: int = column(
        "training examples drawn from the stream (the sum of the batch sizes of every step)", "examples"
    )
    samples_per_second: float = column("samples / train_seconds", "samples/s")
    fused_cells: int = column(
        "cells trained as one batched computation with this one, itself included (1: alone); a fused cell's "
        "train_seconds is its share of the group's steps"
    )
    resumes: int = column("how often the cell took up its checkpoint after an interruption (0: it ran through)")
    peak_memory_bytes: int = column("peak memory of the cell (what was measured: peak_memory_kind)", "bytes")
    peak_memory_kind: str = column(
        "cuda_allocated (the CUDA allocator's peak) or process_rss (the worker's resident-set peak)"
    )
    storage_bytes: int = column("what the method keeps to predict every task seen, at the end", "bytes")
    storage_parts: str = column("storage_bytes by part, as JSON {part: bytes}", "JSON")
    device: str = column("cpu or cuda")
    threads: int = column("torch threads of the cell's process")
    hostname: str = column("host the cell ran on")
    node_id: str = column("Ray node id the cell ran on (tells two nodes of one host apart); empty when inline")
    pid: int = column("process id of the cell's worker")
    git_sha: str = column("commit of the harness that ran it (empty outside a git checkout)")
    harness_version: str = column("version of the harness package")
    torch_version: str = column("torch version")
    python_version: str = column("Python version")


def columns(row_type: type) -> list[tuple[str, type]]:
    """A row type's columns in order, as (name, Python type)."""
    builtins = {"str": str, "int": int, "float": float, "datetime": datetime}
    return [(f.name, builtins[f.type] if isinstance(f.type, str) else f.type) for f in dataclasses.fields(row_type)]


def as_record(row: EvalRow | RunRow) -> dict[str, Any]:
    """The row as the plain dict the store writes (flat, so no deep copy is needed)."""
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
