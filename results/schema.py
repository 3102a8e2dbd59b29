"""Versioned pyarrow schemas of the two tables. Bump SCHEMA_VERSION on any change of columns or meaning."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: a method's diagnostics are metrics named DIAGNOSTIC_PREFIX + name
DIAGNOSTIC_PREFIX = "diagnostic:"  # no metric of the harness has a colon, so a diagnostic never reads as a metric
METRICS = (
    "accuracy",
    "task_inference_accuracy",
    "probe_accuracy",
    "probe_task_inference_accuracy",
    "train_loss",
    "storage_bytes",
)  # what the harness itself records in the evals table's metric column

RUNS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("grid", pa.string()),
        ("tags", pa.string()),
        ("method", pa.string()),
        ("method_version", pa.string()),
        ("method_config", pa.string()),  # JSON
        ("stream", pa.string()),
        ("stream_config", pa.string()),  # JSON
        ("scenario", pa.string()),
        ("backbone", pa.string()),  # JSON
        ("training", pa.string()),  # JSON
        ("seed", pa.int64()),
        ("status", pa.string()),  # "ok" or "failed"
        ("error", pa.string()),
        ("traceback", pa.string()),
        ("started_at", pa.float64()),  # unix time
        ("wall_seconds", pa.float64()),
        ("setup_seconds", pa.float64()),  # building the stream and the model
        ("train_seconds", pa.float64()),  # wall - setup - eval: the steps and the method's own end-of-task work
        ("eval_seconds", pa.float64()),
        ("steps", pa.int64()),
        ("samples", pa.int64()),
        ("samples_per_second", pa.float64()),
        ("peak_memory_bytes", pa.int64()),
        ("peak_memory_kind", pa.string()),
        ("storage_bytes", pa.int64()),
        ("storage_parts", pa.string()),  # JSON {part: bytes}
        ("device", pa.string()),
        ("threads", pa.int64()),
        ("hostname", pa.string()),
        ("pid", pa.int64()),
        ("git_sha", pa.string()),
        ("harness_version", pa.string()),
        ("torch_version", pa.string()),
        ("python_version", pa.string()),
        ("schema_version", pa.int64()),
    ],
    metadata={"schema_version": str(SCHEMA_VERSION), "table": "runs"},
)

EVALS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("step", pa.int64()),  # optimiser steps taken when evaluated
        ("segment", pa.int64()),  # index of the segment being trained (or just finished)
        ("tasks_seen", pa.int64()),
        ("eval_task", pa.int64()),  # -1 for facts about the whole model (storage_bytes)
        ("metric", pa.string()),  # one of METRICS, or DIAGNOSTIC_PREFIX + a method's diagnostic
        ("value", pa.float64()),
        ("n", pa.int64()),  # test examples behind the value
    ],
    metadata={"schema_version": str(SCHEMA_VERSION), "table": "evals"},
)
