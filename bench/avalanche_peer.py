"""The harness against Avalanche on one workload, side by side in one run: training and evaluation speed.

Workload: PermutedMNIST, FC 784-1024-1024-10, RMSprop lr 1e-4, batch 128,
``--tasks`` tasks of ``--steps`` steps each (consolidation is active from the
second task on), then the 10,000-image test set of every task. Rows:

- ``plain loop``: the loop one would write by hand (bench/throughput.py), data
  as uint8 in memory and the permutation an index gather;
- the harness's ``standard``, ``ewc`` (lambda 1000) and ``si`` through
  ``run_cell``, and its ``avalanche:*`` adapters (Avalanche's strategies fed by
  the harness);
- Avalanche 0.6.0 used directly, ``Naive``, ``EWC`` (lambda 1000, separate)
  and ``SynapticIntelligence`` (lambda 1, the SI fix applied so that it does
  real work), in two set-ups:

  - ``tensors``: Avalanche at its fastest. Each task's permuted, normalised
    training examples (exactly steps x 128 of them, so one epoch is the step
    budget) and test set are float tensors in memory, and the evaluator
    computes only experience accuracy and logs nothing;
  - ``classic``: Avalanche as its documentation runs it. Its own
    ``PermutedMNIST`` benchmark (torchvision's MNIST, the permutation and
    normalisation applied image by image as transforms), one epoch of the
    whole 60,000 images per task, and the default evaluator (accuracy and
    loss metrics, the interactive logger; its output is discarded).

Training samples per second cover everything a method does in training
(Avalanche's EWC computes its Fisher over the whole experience at its end,
the harness's over 1,024 examples; each library as it ships). Evaluation is
the time to score every task's 10,000 test images at batch 128: the harness's
evaluation code (``Loop.evaluate``) against Avalanche's ``strategy.eval``.
Repeats are interleaved; each figure is the median with the extremes.

    python bench/avalanche_peer.py --data-dir ../shared/datasets [--steps 500] [--tasks 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import append_figures
from throughput import plain_loop_samples_per_second
from torch import nn

from harness.backbones import PRESETS
from harness.grid import make_cell
from harness.runner import Loop, WorkerSettings, run_cell
from methods.avalanche import import_avalanche, si_plugin_with_copies
from scenarios.datasets import load_arrays

HIDDEN = PRESETS["fc_1024_1024"].hidden
HARNESS_METHODS = {
    "standard": {},
    "ewc": {"ewc_lambda": 1000.0},
    "si": {},
    "avalanche:Naive": {},
    "avalanche:EWC": {"ewc_lambda": 1000.0},
    "avalanche:SynapticIntelligence": {"si_lambda": 1.0},
}
PEERS = {"standard": "Naive", "ewc": "EWC", "si": "SynapticIntelligence"}


def harness_cell(method: str, settings: dict, tasks: int, steps: int) -> object:
    return make_cell(
        method,
        "permuted_mnist",
        "GNs",
        method_settings=settings or None,
        stream_settings={"num_tasks": tasks, "steps_per_task": steps},
        backbone="fc_1024_1024",
        training={"probe_every": 0, "eval_samples": 1000, "lr": 1e-4, "batch_size": 128},
    )


def harness_training(method: str, tasks: int, steps: int, worker: WorkerSettings) -> float:
    run = run_cell(harness_cell(method, HARNESS_METHODS[method], tasks, steps), worker).run
    assert run["status"] == "ok", run["error"]
    return run["samples_per_second"]


def harness_evaluation_seconds(tasks: int, worker: WorkerSettings) -> float:
    """The harness's evaluation code scoring every task's whole test set (weights untrained: speed only)."""
    cell = harness_cell("standard", {}, tasks, 1)
    loop = Loop(cell, worker)
    loop.module.eval()
    loop.seen = list(range(tasks))
    loop.clock.begin_eval()
    for task in range(tasks):
        metrics = loop.evaluator.measure(task, None)
        assert metrics["accuracy"][1] == 10_000
    loop.clock.end_eval()
    return loop.clock.eval_seconds


def fc_model() -> nn.Module:
    widths = (784, *HIDDEN)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(widths[-1], 10))  # classic MNIST images are 1x28x28


class AvalancheSetup:
    """Avalanche's train and test streams of one set-up, its strategies, and their timings."""

    train_stream: object
    test_stream: object

    def __init__(self) -> None:
        self.modules = import_avalanche()

    def evaluator(self) -> dict:
        """The strategy's ``evaluator`` argument: none given means Avalanche's default."""
        return {}

    def strategy(self, name: str) -> object:
        training = self.modules["training"]
        model = fc_model()
        common = {
            "model": model,
            "optimizer": torch.optim.RMSprop(model.parameters(), lr=1e-4),
            "criterion": nn.CrossEntropyLoss(),
            "train_mb_size": 128,
            "train_epochs": 1,
            "eval_mb_size": 128,
            "device": "cpu",
            **self.evaluator(),
        }
        if name == "EWC":
            return training.EWC(ewc_lambda=1000.0, **common)
        if name == "SynapticIntelligence":
            return training.Naive(plugins=[si_plugin_with_copies(si_lambda=1.0, eps=1e-7)], **common)
        return training.Naive(**common)

    def training_samples_per_second(self, name: str) -> float:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its logger
            strategy = self.strategy(name)
            start = time.perf_counter()
            for experience in self.train_stream:
                strategy.train(experience, eval_streams=[])
            seconds = time.perf_counter() - start
        return sum(len(e.dataset) for e in self.train_stream) / seconds

    def evaluation_seconds(self) -> float:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            strategy = self.strategy("Naive")
            start = time.perf_counter()
            strategy.eval(self.test_stream)
            return time.perf_counter() - start


class ClassicSetup(AvalancheSetup):
    """Avalanche's own PermutedMNIST benchmark and default evaluator, as in its documentation and examples."""

    def __init__(self, data_dir: Path | None, tasks: int, root: Path) -> None:
        super().__init__()
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        source = (data_dir or Path("../shared/datasets")) / "MNIST" / "raw"
        for gz in source.glob("*.gz"):  # torchvision finds the verified archives and extracts them, no download
            if not (raw / gz.name).exists():
                shutil.copy(gz, raw / gz.name)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            benchmark = self.modules["classic"].PermutedMNIST(n_experiences=tasks, seed=0, dataset_root=root)
        self.train_stream, self.test_stream = benchmark.train_stream, benchmark.test_stream


class TensorSetup(AvalancheSetup):
    """PermutedMNIST as an Avalanche user builds it from tensors: normalised, permuted float tensors in memory."""

    def __init__(self, data_dir: Path | None, tasks: int, steps: int) -> None:
        super().__init__()
        arrays = load_arrays("MNIST", data_dir)
        generator = torch.Generator().manual_seed(0)

        def normalised(images: np.ndarray) -> torch.Tensor:
            return (torch.from_numpy(images).view(len(images), -1).float() / 255 - 0.1307) / 0.3081

        train_x, test_x = normalised(arrays.train_images), normalised(arrays.test_images)
        train_y, test_y = torch.from_numpy(arrays.train_labels).long(), torch.from_numpy(arrays.test_labels).long()
        make = self.modules["data"]._make_taskaware_tensor_classification_dataset
        train, test = [], []
        for task in range(tasks):
            permutation = torch.randperm(784, generator=generator) if task else torch.arange(784)
            order = torch.randperm(len(train_x), generator=generator)[: steps * 128]
            x, y = train_x[order][:, permutation], train_y[order]
            train.append(make(x, y, task_labels=0, targets=y))
            test.append(make(test_x[:, permutation], test_y, task_labels=0, targets=test_y))
        scenario = self.modules["scenarios"].benchmark_from_datasets(train=train, test=test)
        self.train_stream, self.test_stream = scenario.streams["train"], scenario.streams["test"]

    def evaluator(self) -> dict:
        from avalanche.evaluation.metrics import accuracy_metrics

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No loggers specified": the bench prints its own figures
            plugin = self.modules["training"].plugins.EvaluationPlugin
            return {"evaluator": plugin(accuracy_metrics(experience=True), loggers=[])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=500, help="steps per task")
    parser.add_argument("--tasks", type=int, default=2, help="tasks trained (evaluation: 3 test sets)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("runs/bench/avalanche_peer.parquet"))
    parser.add_argument("--avalanche-root", type=Path, default=Path("runs/bench/avalanche-data"), help="its MNIST copy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    worker = WorkerSettings(str(args.data_dir) if args.data_dir else None, "cpu", args.threads)
    peers = {
        "tensors": (TensorSetup(args.data_dir, args.tasks, args.steps), TensorSetup(args.data_dir, 3, 1)),
        "classic": (
            ClassicSetup(args.data_dir, args.tasks, args.avalanche_root),
            ClassicSetup(args.data_dir, 3, args.avalanche_root),
        ),
    }
    measured: dict[tuple[str, str], list[float]] = {}

    def add(kind: str, name: str, value: float) -> None:
        measured.setdefault((kind, name), []).append(value)
        print(f"  {kind:<11} {name:<38} {value:10.2f}", flush=True)

    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
        add("train", "plain loop", plain_loop_samples_per_second(HIDDEN, args.tasks * args.steps, args.data_dir)[0])
        for method in HARNESS_METHODS:
            add("train", f"harness {method}", harness_training(method, args.tasks, args.steps, worker))
        for setup, (peer, _) in peers.items():
            for name in PEERS.values():
                add("train", f"Avalanche {name} ({setup})", peer.training_samples_per_second(name))
        add("eval", "harness evaluation", harness_evaluation_seconds(3, worker))
        for setup, (_, eval_peer) in peers.items():
            add("eval", f"Avalanche evaluation ({setup})", eval_peer.evaluation_seconds())

    def median(kind: str, name: str) -> float:
        return float(np.median(measured[kind, name]))

    rows = []
    plain = median("train", "plain loop")
    for (kind, name), values in measured.items():
        row = {"kind": kind, "name": name, "median": median(kind, name), "lowest": min(values), "highest": max(values)}
        if kind == "train":
            row["vs_plain_loop"] = row["median"] / plain
            method = name.removeprefix("harness ")
            for setup in peers:
                if method in PEERS:
                    peer = median("train", f"Avalanche {PEERS[method]} ({setup})")
                    row[f"vs_avalanche_{setup}"] = row["median"] / peer
        elif name == "harness evaluation":
            for setup in peers:  # a speed-up: the ratio of the times
                row[f"vs_avalanche_{setup}"] = median("eval", f"Avalanche evaluation ({setup})") / row["median"]
        rows.append(row)
    table = pd.DataFrame(rows).assign(
        threads=args.threads, steps_per_task=args.steps, tasks=args.tasks, measured_at=time.time()
    )
    print("\ntrain: samples/s; eval: seconds for 3 x 10,000 test images; vs_avalanche_*: the harness's speed-up")
    columns = ["kind", "name", "median", "lowest", "highest", "vs_plain_loop"]
    columns += [f"vs_avalanche_{setup}" for setup in peers]
    print(table[columns].to_string(index=False, float_format="%.2f", na_rep=""))
    append_figures(table, args.out)


if __name__ == "__main__":
    main()
