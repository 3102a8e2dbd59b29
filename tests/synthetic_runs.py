"""One cell run in this process, which must finish: what the method and stream tests share."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.cells import Cell
from harness.grid import make_cell
from harness.runner import WorkerSettings, run_cell

TASKS = 3
TRAINING = {"lr": 1e-3, "batch_size": 32, "probe_every": 0}


def run_synthetic(
    method: str,
    scenario: str,
    settings: dict | None = None,
    *,
    steps: int = 40,
    backbone: dict | None = None,
    training: dict | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Train ``TASKS`` synthetic tasks of ``steps`` steps; returns the run row and the evaluations."""
    cell = make_cell(
        method,
        "synthetic",
        scenario,
        method_settings=settings,
        stream_settings={"num_tasks": TASKS, "steps_per_task": steps},
        backbone=backbone or {"name": "fc", "hidden": [32]},
        training=training or TRAINING,
    )
    return run_ok(cell)


def run_ok(cell: Cell, data_dir: Path | None = None, threads: int = 1) -> tuple[dict, pd.DataFrame]:
    """Run a cell on the CPU here; it must finish. Returns the run row and the evaluations."""
    result = run_cell(cell, WorkerSettings(data_dir=str(data_dir) if data_dir else None, device="cpu", threads=threads))
    assert result.run["status"] == "ok", result.run["traceback"]
    return result.run, pd.DataFrame(result.evals)
