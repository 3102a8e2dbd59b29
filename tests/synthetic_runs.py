"""One cell on the tiny synthetic stream, run in this process: what the method tests share."""

from __future__ import annotations

import pandas as pd

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
    result = run_cell(cell, WorkerSettings(data_dir=None, device="cpu", threads=1))
    assert result.run["status"] == "ok", result.run["traceback"]
    return result.run, pd.DataFrame(result.evals)
