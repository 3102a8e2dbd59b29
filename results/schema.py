"""Versioned pyarrow schemas of the two tables. Bump SCHEMA_VERSION on any change of columns or meaning."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from results.rows import EvalRow, RunRow, columns

# 2: a method's diagnostics are metrics named DIAGNOSTIC_PREFIX + name; 3: runs.resumes; 4: runs.started_at a UTC
# timestamp (a float of unix seconds before), runs.node_id, every field's description and unit in its metadata;
# 5: runs.fused_cells (a row of an earlier version ran alone: 1)
SCHEMA_VERSION = 5
DIAGNOSTIC_PREFIX = "diagnostic:"  # no metric of the harness has a colon, so a diagnostic never reads as a metric
METRICS = {  # what the harness itself records in the evals table's metric column: (description, unit of value)
    "accuracy": ("each seen task's test set after every evaluated segment: the accuracy matrix", "fraction"),
    "task_inference_accuracy": (
        "where the task is hidden at test time: how often the task the method names (or its k*l-way answer) is right",
        "fraction",
    ),
    "probe_accuracy": ("one task every probe_every steps on its first probe_samples test examples", "fraction"),
    "probe_task_inference_accuracy": ("the probe's task inference, where the task is hidden", "fraction"),
    "train_loss": (
        "the loss of the last training batch before the evaluation (n: its batch size)",
        "the method's loss",
    ),
    "storage_bytes": ("what the method needs to predict every task seen, after each segment", "bytes"),
}

PYARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), datetime: pa.timestamp("us", tz="UTC")}
SCHEMA_VERSION_FIELD = pa.field(
    "schema_version", pa.int64(), metadata={"description": "SCHEMA_VERSION of the harness that wrote the row"}
)


def schema_of(row_type: type, table: str, extra: tuple[pa.Field, ...] = ()) -> pa.Schema:
    """The Parquet schema of a row type's columns (plus ``extra`` ones the store adds), tagged with the version;
    each field carries its column's description and unit (``results.rows.column``)."""
    fields = [
        pa.field(f.name, PYARROW_TYPES[kind], metadata={k: v for k, v in f.metadata.items() if v})
        for f, (_, kind) in zip(dataclasses.fields(row_type), columns(row_type), strict=True)
    ]
    return pa.schema([*fields, *extra], metadata={"schema_version": str(SCHEMA_VERSION), "table": table})


RUNS = schema_of(RunRow, "runs", (SCHEMA_VERSION_FIELD,))  # the store stamps each run with the version
EVALS = schema_of(EvalRow, "evals")


def check_columns(record: dict[str, object], schema: pa.Schema) -> None:
    """Refuse a row whose keys are not the schema's columns: pyarrow would write a missing key as null and drop
    an unknown one without a word."""
    missing = [name for name in schema.names if name not in record]
    unknown = [key for key in record if key not in schema.names]
    if missing or unknown:
        table = schema.metadata[b"table"].decode()
        raise ValueError(f"a row of the {table} table does not match its schema: missing {missing}, unknown {unknown}")


def upgrade_run_record(record: dict[str, Any]) -> dict[str, Any]:
    """A runs row as written by an earlier schema, in this schema's columns and types (the row says which
    version wrote it; absent columns get the value that means "not recorded")."""
    upgraded = {name: record.get(name) for name in RUNS.names}
    if isinstance(upgraded["started_at"], int | float):
        upgraded["started_at"] = datetime.fromtimestamp(upgraded["started_at"], tz=UTC)
    for name, default in (("resumes", 0), ("node_id", ""), ("fused_cells", 1)):
        if upgraded[name] is None:
            upgraded[name] = default
    return upgraded
