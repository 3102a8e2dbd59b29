"""What Ray scheduling costs: many tiny cells through Ray against the same cells one after another in one process.

Both runs go through ``run_grid`` into fresh folders: ``--executor inline``
runs the cells here, one at a time; ``--executor ray`` starts a local Ray
instance and runs them as tasks on reused worker processes, as many at once as
there are CPUs. The cells are deliberately tiny (a few steps of a 16-unit
network) so that scheduling, not training, dominates. Reported:

- Ray's fixed start-up (``ray.init``) and shut-down, timed on their own;
- the overhead per cell: Ray's wall time, less start-up, times its slots,
  divided by the cells, less the mean time a cell spends in ``run_cell``;
- what that overhead would be on the smoke grid (its cells and wall time
  given by ``--grid-cells`` and ``--grid-seconds``, measured here: 69 cells,
  331 s), against the issue's goal of under 5%.

    python bench/scheduler_overhead.py [--cells 60] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import append_figures

from harness.grid import make_cell
from harness.scheduler import RunOptions, run_grid


def tiny_cells(count: int, steps: int) -> list:
    return [
        make_cell(
            "standard",
            "synthetic",
            "GG",
            stream_settings={"num_tasks": 2, "steps_per_task": steps, "train_per_task": 64, "test_per_task": 64},
            backbone={"name": "fc", "hidden": [16]},
            training={"batch_size": 16, "probe_every": 0},
            seed=seed,
        )
        for seed in range(count)
    ]


def timed_grid(cells: list, executor: str, out: Path) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    summary = run_grid(cells, RunOptions(out=out, executor=executor, progress=lambda _: None))  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    assert summary.done == len(cells), summary.failures
    return wall, pd.read_parquet(out / "runs")


def ray_start_and_stop() -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--grid-cells", type=int, default=69)
    parser.add_argument("--grid-seconds", type=float, default=331.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/scheduler.parquet"))
    args = parser.parse_args()
    cells = tiny_cells(args.cells, args.steps)
    slots = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        inline_wall, inline_runs = timed_grid(cells, "inline", Path(scratch) / "inline")
        ray_wall, ray_runs = timed_grid(cells, "ray", Path(scratch) / "ray")
    startup = ray_start_and_stop()
    cell_seconds = ray_runs.wall_seconds.mean()
    per_cell = (ray_wall - startup) * slots / len(cells) - cell_seconds
    share = (startup + per_cell * args.grid_cells / slots) / args.grid_seconds
    print(f"{len(cells)} tiny cells ({args.steps} steps per task), {slots} CPUs")
    print(f"  one process, one at a time: {inline_wall:6.1f} s  (mean cell {inline_runs.wall_seconds.mean():.3f} s)")
    print(f"  Ray, {slots} at a time:          {ray_wall:6.1f} s  (mean cell {cell_seconds:.3f} s)")
    print(f"  Ray start-up and shut-down:  {startup:6.1f} s")
    print(f"  overhead per cell:            {per_cell:6.3f} s")
    print(f"  worker processes used:        {ray_runs.pid.nunique()} for {len(cells)} cells")
    print(
        f"  on the smoke grid ({args.grid_cells} cells, {args.grid_seconds:.0f} s): {100 * share:.1f}% of its wall time"
    )
    append_figures(
        pd.DataFrame(
            [
                {
                    "cells": len(cells),
                    "slots": slots,
                    "inline_seconds": inline_wall,
                    "ray_seconds": ray_wall,
                    "startup_seconds": startup,
                    "overhead_per_cell_seconds": per_cell,
                    "smoke_share": share,
                    "workers": ray_runs.pid.nunique(),
                    "measured_at": time.time(),
                }
            ]
        ),
        args.out,
    )


if __name__ == "__main__":
    main()
