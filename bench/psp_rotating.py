"""PSP on rotating Fashion-MNIST (PSP Figures 4b and 5-right): accuracy at 0 degrees over time.

Every step turns the batch 0.36 degrees further; a cycle is 1000 steps. A
network that forgets oscillates with the cycle on the 0-degree test set; a
network that keeps its contexts apart stays flat. Prints, per method, the mean
0-degree accuracy at each position in the cycle over the second half of the
run (the oscillation profile), its peak-to-trough swing and mean, and samples
per second, read from the Parquet evals.

    python bench/psp_rotating.py --data-dir ../shared/datasets [--steps 10000] [--settings authors] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import PSP_AUTHORS_SETTINGS, run_cells

from harness.grid import make_cell

METHODS = ["standard", "psp_complex", "psp_fast", "psp_fast_localmix"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--stream", default="rotating_fashion_mnist")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--backbone", default="256,256,256", help="hidden widths (the authors' rotating runs)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settings", choices=("paper", "authors"), default="paper", help="method settings: defaults, or the authors'"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/psp_rotating"))
    args = parser.parse_args()
    backbone = {"name": "fc", "hidden": [int(w) for w in args.backbone.split(",")]}
    cells = [
        make_cell(
            method,
            args.stream,
            "GG",
            method_settings=PSP_AUTHORS_SETTINGS.get(method) if args.settings == "authors" else None,
            stream_settings={"total_steps": args.steps},
            backbone=backbone,
            training={"probe_every": 100, "probe_samples": 0, "eval_every_segments": 10},
            seed=args.seed,
            grid="bench-psp-rotating",
        )
        for method in args.methods.split(",")
    ]
    runs, evals = run_cells(cells, args.out, args.data_dir)
    probes = evals[evals.metric == "probe_accuracy"]
    print(f"{args.stream}, FC {args.backbone}, {args.steps} steps, accuracy on the 0-degree test set")
    print("mean accuracy by position in the 1000-step cycle, second half of the run:")
    print("  method             " + " ".join(f"{p:>5d}" for p in range(0, 1000, 100)) + "   swing   mean  samples/s")
    for cell in cells:
        rows = probes[(probes.cell_id == cell.cell_id) & (probes.step > args.steps // 2)]
        profile = rows.groupby(rows.step % 1000).value.mean()
        run = runs[runs.cell_id == cell.cell_id].iloc[0]
        print(
            f"  {cell.method:18s} "
            + " ".join(f"{profile.get(p, float('nan')):5.3f}" for p in range(0, 1000, 100))
            + f"  {profile.max() - profile.min():6.3f} {rows.value.mean():6.3f} {run.samples_per_second:9.0f}"
        )


if __name__ == "__main__":
    main()
