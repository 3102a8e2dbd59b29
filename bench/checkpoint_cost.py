"""What a mid-cell checkpoint costs: its size and the time to write it, for a few methods on FC 1024-1024.

Each method trains three PermutedMNIST tasks with a checkpoint every ``--every`` seconds; the time inside
``Loop.checkpoint`` (pickling, SHA-256, fsync, the partial results) is measured per checkpoint. At the
default interval of 300 s, the overhead is the mean time divided by 300.

    python bench/checkpoint_cost.py --data-dir ../shared/datasets [--steps 100] [--every 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the project on the path)

from harness import runner
from harness.checkpoint import checkpoint_path
from harness.grid import make_cell
from harness.runner import DEFAULT_CHECKPOINT_EVERY_S, WorkerSettings, run_cell

METHODS = [
    ("standard", "GG", {}),
    ("ewc", "GG", {}),
    ("supsup", "GNu", {}),
    ("psp_rotation", "GG", {"learn_contexts": True, "bias": True}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100, help="steps per task")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between checkpoints")
    args = parser.parse_args()
    save = runner.Loop.checkpoint
    print(f"{'method':14s} {'checkpoints':>11s} {'ms each':>8s} {'MiB':>6s} {'overhead at 300 s':>18s}")
    for method, scenario, settings in METHODS:
        cell = make_cell(
            method,
            "permuted_mnist",
            scenario,
            method_settings=settings,
            stream_settings={"num_tasks": 3, "steps_per_task": args.steps},
            backbone={"name": "fc", "hidden": [1024, 1024]},
            training={"probe_every": 0, "eval_samples": 1000},
        )
        spent: list[float] = []

        def timed(loop: runner.Loop, position: object, spent: list[float] = spent) -> None:
            started = time.perf_counter()
            save(loop, position)
            spent.append(time.perf_counter() - started)

        runner.Loop.checkpoint = timed  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory() as out:
            settings = WorkerSettings(str(args.data_dir), "cpu", 1, out=out, checkpoint_every_s=args.every)
            result = run_cell(cell, settings)
            assert result.run["status"] == "ok", result.run["traceback"]
            size = checkpoint_path(Path(out), cell.cell_id).stat().st_size if spent else 0
        runner.Loop.checkpoint = save  # type: ignore[method-assign]
        each = sum(spent) / max(len(spent), 1)
        overhead = 100 * each / DEFAULT_CHECKPOINT_EVERY_S
        print(f"{method:14s} {len(spent):11d} {1000 * each:8.0f} {size / 2**20:6.1f} {overhead:17.2f}%")


if __name__ == "__main__":
    main()
