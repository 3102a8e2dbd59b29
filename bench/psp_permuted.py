"""PSP on PermutedMNIST (PSP Figures 2 and 3): task 0 over time and the average over the last tasks.

FC 1024-1024, RMSprop lr 1e-4, batch 128, 1000 steps per task, 10 tasks by
default (the paper: 50). Prints task-0 accuracy after each task (column 0 of
the accuracy matrix, full test set), the final average over the last 10 tasks
(Figure 3's table metric), forgetting, samples per second and storage, all
read from the Parquet tables the run writes.

    python bench/psp_permuted.py --data-dir ../shared/datasets [--tasks 10] [--settings authors] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import PSP_AUTHORS_SETTINGS, run_cells

from harness.grid import make_cell
from results.metrics import accuracy_matrix, forgetting, last_k_average

METHODS = ["standard", "psp_binary", "psp_complex", "psp_rotation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--backbone", default="fc_1024_1024", help="a preset, or hidden widths: 256,256,256")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settings", choices=("paper", "authors"), default="paper", help="method settings: defaults, or the authors'"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/psp_permuted"))
    args = parser.parse_args()
    backbone = (
        {"name": "fc", "hidden": [int(w) for w in args.backbone.split(",")]} if "," in args.backbone else args.backbone
    )
    cells = [
        make_cell(
            method,
            "permuted_mnist",
            "GG",
            method_settings=PSP_AUTHORS_SETTINGS.get(method) if args.settings == "authors" else None,
            stream_settings={"num_tasks": args.tasks, "steps_per_task": args.steps},
            backbone=backbone,
            training={"probe_every": 250, "probe_samples": 2000},
            seed=args.seed,
            grid="bench-psp-permuted",
        )
        for method in args.methods.split(",")
    ]
    runs, evals = run_cells(cells, args.out, args.data_dir)
    print(f"PermutedMNIST, {args.backbone}, {args.tasks} tasks x {args.steps} steps, seed {args.seed}")
    print("task-0 accuracy after each task (full test set):")
    summary = []
    for cell in cells:
        run = runs[runs.cell_id == cell.cell_id].iloc[0]
        matrix = accuracy_matrix(evals, cell.cell_id)
        print(f"  {cell.method:13s} " + " ".join(f"{a:.3f}" for a in matrix[:, 0]))
        summary.append((cell.method, matrix, run))
    print("method         task0-first task0-last  last-10-avg  forgetting  samples/s   storage-MB")
    for method, matrix, run in summary:
        print(
            f"  {method:13s} {matrix[0, 0]:11.3f} {matrix[-1, 0]:10.3f} {last_k_average(matrix, 10):12.3f} "
            f"{forgetting(matrix):11.3f} {run.samples_per_second:10.0f} {run.storage_bytes / 1e6:12.2f}"
        )


if __name__ == "__main__":
    main()
