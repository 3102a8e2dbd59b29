"""Versioned pyarrow schemas of the two tables. Bump SCHEMA_VERSION on any change of columns or meaning."""

from __future__ import annotations

import pyarrow as pa

from results.rows import EvalRow, RunRow, columns

SCHEMA_VERSION = 3  # 2: a method's diagnostics are metrics named DIAGNOSTIC_PREFIX + name; 3: runs.resumes
DIAGNOSTIC_PREFIX = "diagnostic:"  # no metric of the harness has a colon, so a diagnostic never reads as a metric
METRICS = (
    "accuracy",
    "task_inference_accuracy",
    "probe_accuracy",
    "probe_task_inference_accuracy",
    "train_loss",
    "storage_bytes",
)  # what the harness itself records in the evals table's metric column

PYARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64()}


def schema_of(row_type: type, table: str, extra: tuple[tuple[str, pa.DataType], ...] = ()) -> pa.Schema:
    """The Parquet schema of a row type's columns (plus ``extra`` ones the store adds), tagged with the version."""
    fields = [(name, PYARROW_TYPES[kind]) for name, kind in columns(row_type)] + list(extra)
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION), "table": table})


RUNS = schema_of(RunRow, "runs", (("schema_version", pa.int64()),))  # the store stamps each run with the version
EVALS = schema_of(EvalRow, "evals")


def check_columns(record: dict[str, object], schema: pa.Schema) -> None:
    """Refuse a row whose keys are not the schema's columns: pyarrow would write a missing key as null and drop
    an unknown one without a word."""
    missing = [name for name in schema.names if name not in record]
    unknown = [key for key in record if key not in schema.names]
    if missing or unknown:
        table = schema.metadata[b"table"].decode()
        raise ValueError(f"a row of the {table} table does not match its schema: missing {missing}, unknown {unknown}")
