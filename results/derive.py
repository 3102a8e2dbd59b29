"""The report's second layer: one row per finished cell, with its identity, the value of every registered
column (:mod:`results.columns`) and the series the plots need. No torch here."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.presets import backbone_name, spec_from_dict
from results.columns import CellData, ColumnSpec, columns
from results.load import Tables
from results.metrics import accuracy_matrix, final_row
from results.protocol import protocol_of

# what makes cells one leaderboard row: all of it but the seed (stream and scenario name the row's table)
IDENTITY = ["stream", "scenario", "method", "method_version", "method_config", "backbone", "stream_config", "training"]
EVAL_COLUMNS = ["metric", "segment", "eval_task", "value", "step"]


def backbone_label(raw: str | Mapping[str, Any]) -> str:
    """The preset name of a runs row's backbone (:data:`harness.presets.PRESETS`), else a short description."""
    return backbone_name(spec_from_dict(json.loads(raw) if isinstance(raw, str) else raw))


def _value(column: ColumnSpec, cell: CellData) -> float:
    """A column's value of a cell; numpy's warnings on empty slices are dropped, as NaN already says it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(column.value(cell))


def _average_over_tasks(evals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(tasks seen, average accuracy over them) at every evaluation: SupSup's Figures 3 to 6."""
    accuracy = evals[evals["metric"] == "accuracy"]
    if accuracy.empty:
        return np.array([]), np.array([])
    grouped = accuracy.groupby("segment").agg(seen=("tasks_seen", "max"), value=("value", "mean"))
    return grouped["seen"].to_numpy(), grouped["value"].to_numpy()


def _cell_row(run: dict[str, Any], evals: pd.DataFrame) -> dict[str, Any]:
    cell = CellData(run, evals, accuracy_matrix(evals))  # one row per segment: a sparse schedule leaves rows empty
    probes = evals[evals["metric"] == "probe_accuracy"].sort_values("step")
    row = {
        **{key: run.get(key) for key in ("cell_id", "grid", "tags", "seed", *IDENTITY)},
        "backbone_label": backbone_label(run["backbone"]),
        "tasks": int(np.isfinite(final_row(cell.matrix)).sum()),
        "protocol": protocol_of(run),
        "approximate": frozenset(c.name for c in columns() if c.approximate is not None and c.approximate(cell)),
        "matrix": cell.matrix,
        "probe": (probes["step"].to_numpy(), probes["value"].to_numpy()),
        "average_over_tasks": _average_over_tasks(evals),
    }
    values = {column.name: _value(column, cell) for column in columns()}
    if taken := sorted(row.keys() & values.keys()):
        raise ValueError(f"leaderboard column {taken[0]!r} takes a name the report uses for a cell's {taken[0]}")
    return {**row, **values}


def cell_metrics(tables: Tables) -> pd.DataFrame:
    """One row per finished cell: its identity, its value of every column, and the series the plots need."""
    ok = tables.runs[tables.runs["status"] == "ok"]
    by_cell = dict(tuple(tables.evals.groupby("cell_id"))) if not tables.evals.empty else {}
    empty = pd.DataFrame(columns=EVAL_COLUMNS)
    return pd.DataFrame([_cell_row(run, by_cell.get(run["cell_id"], empty)) for run in ok.to_dict("records")])
