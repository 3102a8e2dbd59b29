"""Training throughput of every registered method against a plain PyTorch loop on the same model.

Workload: PermutedMNIST, RMSprop, batch 128, the data as uint8 on the device
and the permutation an index gather, on FC 784-1024-1024-10 and LeNet
300-100. The plain loop does exactly the steps a researcher would write by
hand; each method runs through the harness's ``run_cell`` over two tasks so
that consolidation penalties are active for half the steps. Every
measurement is repeated ``--repeats`` times, interleaved (plain loop, then each
method, then again), and reported as the median with the lowest and highest
repeat: on a small shared machine single timings vary by tens of percent.
Figures are printed as a table and appended to a Parquet file.

    python bench/throughput.py --data-dir ../shared/datasets [--steps 1000] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _common import append_figures
from torch import nn

from harness.backbones import PRESETS
from harness.grid import make_cell
from harness.meters import PeakMemory
from harness.runner import WorkerSettings, run_cell
from methods import METHODS
from scenarios.datasets import load_arrays


def plain_loop_samples_per_second(hidden: tuple[int, ...], steps: int, data_dir: Path | None) -> tuple[float, int]:
    """Samples per second of the loop one would write by hand, and the process's peak memory while it ran."""
    memory = PeakMemory(torch.device("cpu"))
    arrays = load_arrays("MNIST", data_dir)
    images = torch.from_numpy(arrays.train_images).view(len(arrays.train_images), -1)
    labels = torch.from_numpy(arrays.train_labels)
    permutation = torch.randperm(784)
    widths = (784, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    order = torch.randperm(len(images))

    def step(i: int) -> None:
        index = order[(i * 128) % (len(order) - 128) :][:128]
        x = (images[index].float() / 255 - 0.1307) / 0.3081
        loss = F.cross_entropy(model(x[:, permutation]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(20):  # warm-up
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * 128 / (time.perf_counter() - start), memory.peak_bytes()


def harness_samples_per_second(
    method: str, backbone: str, steps: int, settings: WorkerSettings, scenario: str = ""
) -> dict:
    supported = METHODS.get(method).scenarios
    if scenario not in supported:
        scenario = "GG" if "GG" in supported else sorted(supported)[0]
    cell = make_cell(
        method,
        "permuted_mnist",
        scenario,
        stream_settings={"num_tasks": 2, "steps_per_task": steps // 2},
        backbone=backbone,
        training={"probe_every": 0, "eval_samples": 1000},
    )
    run = run_cell(cell, settings).run
    assert run["status"] == "ok", run["error"]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--backbones", default="fc_1024_1024,lenet_300_100")
    parser.add_argument("--methods", default="", help="comma-separated registered names (default: all)")
    parser.add_argument("--scenario", default="GG", help="where a method supports it (else GG or its first)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/throughput.parquet"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = WorkerSettings(str(args.data_dir) if args.data_dir else None, "cpu", args.threads)
    measured: dict[tuple[str, str], list[float]] = {}
    peaks: dict[tuple[str, str], int] = {}
    for _ in range(args.repeats):
        for backbone in args.backbones.split(","):
            plain, peak = plain_loop_samples_per_second(PRESETS[backbone].hidden, args.steps, args.data_dir)
            measured.setdefault((backbone, "plain loop"), []).append(plain)
            peaks[backbone, "plain loop"] = max(peaks.get((backbone, "plain loop"), 0), peak)
            for method in args.methods.split(",") if args.methods else METHODS.names():
                run = harness_samples_per_second(method, backbone, args.steps, settings, args.scenario)
                measured.setdefault((backbone, method), []).append(run["samples_per_second"])
                peaks[backbone, method] = max(peaks.get((backbone, method), 0), run["peak_memory_bytes"])
    rows = []
    for (backbone, method), values in measured.items():
        plain = float(np.median(measured[(backbone, "plain loop")]))
        median = float(np.median(values))
        rows.append(
            {
                "backbone": backbone,
                "method": method,
                "samples_per_second": median,
                "lowest": min(values),
                "highest": max(values),
                "ratio": median / plain,
                "peak_memory_mb": peaks[backbone, method] / 2**20,  # the process's resident-set high-water mark
            }
        )
    table = pd.DataFrame(rows).assign(
        scenario=args.scenario, threads=args.threads, steps=args.steps, measured_at=time.time()
    )
    columns = ["backbone", "method", "samples_per_second", "lowest", "highest", "ratio", "peak_memory_mb"]
    print(table[columns].to_string(index=False, float_format="%.2f"))
    append_figures(table, args.out)


if __name__ == "__main__":
    main()
