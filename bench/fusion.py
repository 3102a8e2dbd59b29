"""Fused cells against the same cells alone (issue 17), side by side in one run.

``cells``: K cells of one setting (seeds 0..K-1) trained in this process, one after another and then fused
(``harness.fusion.run_group``), on one thread: aggregate training samples per second of each, and the speed-up.
It also checks the fused rows equal the alone rows (the largest difference is printed).

    python bench/fusion.py cells --data-dir ../shared/datasets [--methods standard,ewc,si] [--sizes 2,4,8]

``products``: forward and backward of K LeNets' layers on one thread, one after another, as ``baddbmm`` over
stacked weights, and under ``vmap``: whether batching the matrix products pays at all here.

    python bench/fusion.py products [--cells 4] [--batch 128]

``grid``: a grid through ``harness run`` twice, ``--fuse off`` and ``--fuse on``, each into a fresh folder,
with everything else equal; the wall time of the whole run, and per fused group the sum of its members' wall
times against the sum of the same cells' alone.

    python bench/fusion.py grid --grid smoke --data-dir ../shared/datasets [--scale 0.1] [--seeds 3] [--only TAG]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import ROOT, append_figures
from torch import Tensor

from harness.backbones import PRESETS
from harness.fusion import plan_fusion, run_group
from harness.grid import Filters, expand_grid, make_cell
from harness.runner import WorkerSettings, run_cell


def bench_cells(args: argparse.Namespace) -> pd.DataFrame:
    torch.set_num_threads(1)
    settings = WorkerSettings(data_dir=str(args.data_dir) if args.data_dir else None, device="cpu", threads=1)
    rows = []
    print("| method | backbone | cells | alone (samples/s) | fused (samples/s) | speed-up | largest row difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in args.methods.split(","):
        for size in [int(k) for k in args.sizes.split(",")]:
            cells = [
                make_cell(
                    method,
                    "permuted_mnist",
                    "GG" if method in ("multihead", "separate") or method.startswith("psp") else "GNs",
                    stream_settings={"num_tasks": args.tasks, "steps_per_task": args.steps},
                    backbone=dataclasses.asdict(PRESETS[args.backbone]),
                    training={"eval_samples": 500, "probe_every": 0},
                    seed=seed,
                )
                for seed in range(size)
            ]
            run_cell(cells[0], settings)  # warm: the dataset decoded and cached, the kernels' first calls made
            alone_s = fused_s = 0.0
            for _ in range(args.rounds):  # alternated, so that a change of load hits both alike
                began = time.perf_counter()
                alone = [run_cell(cell, settings) for cell in cells]
                alone_s += time.perf_counter() - began
                began = time.perf_counter()
                fused = {r.run["cell_id"]: r for r in run_group(cells, settings)}
                fused_s += time.perf_counter() - began
            samples = sum(r.run["samples"] for r in alone) * args.rounds
            worst = 0.0
            for cell, own in zip(cells, alone, strict=True):
                a = {(r["step"], r["eval_task"], r["metric"]): r["value"] for r in own.evals}
                b = {(r["step"], r["eval_task"], r["metric"]): r["value"] for r in fused[cell.cell_id].evals}
                worst = max(worst, max(abs(a[k] - b[k]) for k in a))
            statuses = {r.run["status"] for r in fused.values()} | {r.run["status"] for r in alone}
            fused_cells = {r.run["fused_cells"] for r in fused.values()}
            print(
                f"| {method} | {args.backbone} | {size} | {samples / alone_s:,.0f} | {samples / fused_s:,.0f} | "
                f"{alone_s / fused_s:.2f} | {worst:.1e} |"
                + ("" if statuses == {"ok"} else f" {statuses}")
                + ("" if fused_cells == {size} else f" (fused_cells {fused_cells})")
            )
            rows.append(
                {
                    "mode": "cells",
                    "method": method,
                    "backbone": args.backbone,
                    "cells": size,
                    "alone_seconds": alone_s,
                    "fused_seconds": fused_s,
                    "samples": samples,
                    "largest_difference": worst,
                    "measured_at": time.time(),
                }
            )
    return pd.DataFrame(rows)


def bench_products(args: argparse.Namespace) -> pd.DataFrame:
    import torch.nn.functional as F
    from torch.func import vmap

    torch.set_num_threads(1)
    k, batch, widths = args.cells, args.batch, (784, 300, 100, 10)
    stacked = [torch.randn(k, o, i, requires_grad=True) for i, o in zip(widths, widths[1:], strict=False)]
    biases = [torch.zeros(k, o, requires_grad=True) for o in widths[1:]]
    own = [[t[j].detach().clone().requires_grad_() for t in (*stacked, *biases)] for j in range(k)]
    x, y = torch.randn(k, batch, 784), torch.randint(0, 10, (k, batch))

    def network(w0: Tensor, w1: Tensor, w2: Tensor, b0: Tensor, b1: Tensor, b2: Tensor, h: Tensor) -> Tensor:
        return F.linear(F.relu(F.linear(F.relu(F.linear(h, w0, b0)), w1, b1)), w2, b2)

    def alone() -> None:
        for j in range(k):
            F.cross_entropy(network(*own[j], x[j]), y[j]).backward()

    def baddbmm() -> None:
        h = x
        for layer, (w, b) in enumerate(zip(stacked, biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            h = torch.relu(h) if layer < 2 else h
        F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="sum").div(batch).backward()

    def vmapped() -> None:
        out = vmap(network)(*stacked, *biases, x)
        F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").div(batch).backward()

    totals = {"alone": 0.0, "baddbmm": 0.0, "vmap": 0.0}
    for _ in range(args.rounds):  # alternated, so that a change of load hits all alike
        for name, step in (("alone", alone), ("baddbmm", baddbmm), ("vmap", vmapped)):
            step()
            began = time.perf_counter()
            for _ in range(20):
                step()
            totals[name] += time.perf_counter() - began
    per_step = {name: 1000 * t / (20 * args.rounds) for name, t in totals.items()}
    print(
        f"forward and backward of {k} LeNet 300-100 at batch {batch}, one thread, ms per step: "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in per_step.items())
    )
    return pd.DataFrame([{"mode": "products", "cells": k, **per_step, "measured_at": time.time()}])


def harness_run(args: argparse.Namespace, fuse: str, out: Path) -> float:
    command = [sys.executable, "-m", "harness.cli", "run", "--grid", args.grid, "--out", str(out), "--fuse", fuse]
    command += ["--scale", str(args.scale), "--executor", args.executor, "--checkpoint-every", "0"]
    command += ["--fuse-max", str(args.fuse_max)]
    if args.seeds:
        command += ["--seeds", str(args.seeds)]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    for tag in args.only:
        command += ["--only", tag]
    for name in args.streams:
        command += ["--streams", name]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def bench_grid(args: argparse.Namespace) -> pd.DataFrame:
    filters = Filters(streams=tuple(args.streams), seeds=args.seeds, scale=args.scale, only=tuple(args.only))
    cells = expand_grid(args.grid, filters)
    slots = 1 if args.executor == "inline" else 2
    plan = plan_fusion(cells, args.fuse_max, slots)
    with tempfile.TemporaryDirectory(prefix="fusion-bench-") as scratch:
        walls = {}
        for fuse in ("off", "on"):
            out = Path(scratch) / fuse
            walls[fuse] = (harness_run(args, fuse, out), pd.read_parquet(out / "runs"))
    (off_s, off_runs), (auto_s, auto_runs) = walls["off"], walls["on"]
    off_wall = dict(zip(off_runs.cell_id, off_runs.wall_seconds, strict=True))
    auto_wall = dict(zip(auto_runs.cell_id, auto_runs.wall_seconds, strict=True))
    fused_cells = dict(zip(auto_runs.cell_id, auto_runs.fused_cells, strict=True))
    rows = []
    print(f"{args.grid} (--scale {args.scale}, --seeds {args.seeds}, --executor {args.executor}): {len(cells)} cells")
    print("| group | cells | alone (s, sum of walls) | fused (s) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for group in plan.groups:
        if len(group) < 2:
            continue
        ids = [c.cell_id for c in group]
        alone = sum(off_wall[i] for i in ids)
        fused = sum(auto_wall[i] for i in ids)
        label = f"{group[0].method}/{group[0].stream}/{group[0].scenario}/{json.dumps(group[0].backbone)}"
        ran_fused = {int(fused_cells[i]) for i in ids}
        print(
            f"| {label} | {len(group)} | {alone:.1f} | {fused:.1f} | {alone / fused:.2f} |"
            + ("" if ran_fused == {len(group)} else f" (ran fused_cells={ran_fused})")
        )
        rows.append(
            {
                "mode": "grid",
                "grid": args.grid,
                "group": label,
                "cells": len(group),
                "alone_seconds": alone,
                "fused_seconds": fused,
                "measured_at": time.time(),
            }
        )
    alone_cells = [c.cell_id for g in plan.groups if len(g) == 1 for c in g]
    print(
        f"whole run: --fuse off {off_s:.0f} s, --fuse on {auto_s:.0f} s ({off_s / auto_s:.2f}x); cells alone in "
        f"both: {sum(off_wall[i] for i in alone_cells):.0f} s against {sum(auto_wall[i] for i in alone_cells):.0f} s"
    )
    rows.append(
        {
            "mode": "grid",
            "grid": args.grid,
            "group": "whole run",
            "cells": len(cells),
            "alone_seconds": off_s,
            "fused_seconds": auto_s,
            "measured_at": time.time(),
        }
    )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    cells = modes.add_parser("cells")
    cells.add_argument("--methods", default="standard,ewc,si")
    cells.add_argument("--sizes", default="2,4,8")
    cells.add_argument("--backbone", default="lenet_300_100")
    cells.add_argument("--tasks", type=int, default=2)
    cells.add_argument("--steps", type=int, default=300)
    cells.add_argument("--rounds", type=int, default=2, help="alone then fused, this many times")
    products = modes.add_parser("products")
    products.add_argument("--cells", type=int, default=4)
    products.add_argument("--batch", type=int, default=128)
    products.add_argument("--rounds", type=int, default=6)
    grid = modes.add_parser("grid")
    grid.add_argument("--grid", default="smoke")
    grid.add_argument("--scale", type=float, default=1.0)
    grid.add_argument("--seeds", type=int, default=None)
    grid.add_argument("--only", action="append", default=[])
    grid.add_argument("--streams", action="append", default=[])
    grid.add_argument("--executor", choices=("ray", "inline"), default="ray")
    grid.add_argument("--fuse-max", type=int, default=8)
    for sub in (cells, products, grid):
        sub.add_argument("--data-dir", type=Path, default=None)
        sub.add_argument("--out", type=Path, default=Path("runs/bench/fusion.parquet"))
    args = parser.parse_args()
    table = {"cells": bench_cells, "products": bench_products, "grid": bench_grid}[args.mode](args)
    append_figures(table, args.out)


if __name__ == "__main__":
    main()
