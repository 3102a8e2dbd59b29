"""The leaderboard's metric columns, each one registered spec (as lm-evaluation-harness registers metrics).

A spec names a number per finished cell (a function of the cell's accuracy
matrix, evaluations or runs row), how it reads, which way is better, and, where
a reader needs it, a description that joins the page's legend. The report
aggregates every registered column over seeds and shows it, in the order of
registration; a new column is one ``register_column(ColumnSpec(...))`` here,
or in an outside package through the ``harness.columns`` entry-point group.

No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.registry import Registry
from results.metrics import backward_transfer, backward_transfer_is_approximate, final_row, forgetting


@dataclass(frozen=True)
class CellData:
    """What a column may read of one finished cell."""

    run: Mapping[str, Any]  # its runs-table row
    evals: pd.DataFrame  # its evaluations
    matrix: np.ndarray  # its accuracy matrix (:func:`results.metrics.accuracy_matrix`)


@dataclass(frozen=True)
class ColumnSpec:
    name: str  # the key of its values in the report's tables
    heading: str
    value: Callable[[CellData], float]  # NaN where a cell has no such number
    format: Callable[[float], str]  # the text of a finite value
    higher_is_better: bool
    description: str = ""  # in the legend as "heading: description"; empty for a self-explaining heading
    approximate: Callable[[CellData], bool] | None = None  # a row with an approximate cell reads "≈ value"


COLUMNS: Registry[ColumnSpec] = Registry("leaderboard column", entry_point_group="harness.columns")


def register_column(spec: ColumnSpec) -> ColumnSpec:
    """Add a column to every leaderboard after those registered before it; a name already taken is refused."""
    return COLUMNS.register(spec.name)(spec)


def columns() -> list[ColumnSpec]:
    """The leaderboard's metric columns, in order."""
    return COLUMNS.entries()


# ---- how values read ---------------------------------------------------------------------------------------------


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def byte_size(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def count(value: float) -> str:
    return f"{value:,.0f}"


# ---- the harness's columns ---------------------------------------------------------------------------------------


def final_average_accuracy(cell: CellData) -> float:
    final = final_row(cell.matrix)
    return float(np.nanmean(final)) if np.isfinite(final).any() else float("nan")


def of_matrix(metric: Callable[[np.ndarray], float]) -> Callable[[CellData], float]:
    """A column value from a metric of the accuracy matrix (:mod:`results.metrics`); NaN without a matrix."""
    return lambda cell: float(metric(cell.matrix)) if cell.matrix.size else float("nan")


def final_task_inference(cell: CellData) -> float:
    """Mean task-inference accuracy over the tasks at the last segment that measured it."""
    inference = cell.evals[cell.evals["metric"] == "task_inference_accuracy"]
    if inference.empty:
        return float("nan")
    return float(inference.loc[inference["segment"] == inference["segment"].max(), "value"].mean())


def of_run(field: str) -> Callable[[CellData], float]:
    """A column value from a number of the runs row; NaN where it is missing (or zero: not measured)."""
    return lambda cell: float(cell.run.get(field) or float("nan"))


register_column(ColumnSpec("accuracy", "final avg accuracy", final_average_accuracy, percent, True))
register_column(
    ColumnSpec(
        "forgetting",
        "forgetting",
        of_matrix(forgetting),
        percent,
        False,
        "mean over the tasks evaluated before the last evaluation of their best earlier accuracy minus their final one",
    )
)
register_column(
    ColumnSpec(
        "backward_transfer",
        "backward transfer",
        of_matrix(backward_transfer),
        percent,
        True,
        "final minus first evaluation after training, '≈' where that evaluation came later than right after the "
        "task's segment, empty on continuous streams (segments are not tasks)",
        approximate=lambda cell: bool(cell.matrix.size) and backward_transfer_is_approximate(cell.matrix),
    )
)
register_column(ColumnSpec("task_inference", "task inference", final_task_inference, percent, True))
register_column(ColumnSpec("storage_bytes", "bytes", of_run("storage_bytes"), byte_size, False))
register_column(ColumnSpec("samples_per_second", "samples/s", of_run("samples_per_second"), count, True))
