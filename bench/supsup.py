"""SupSup, BatchE and their task inference on the real MNIST (SupSup sec. 4.2, 4.3, Figures 3-6).

Subcommands, each printing its figures (all training through the harness, read
back from the Parquet tables):

    gnu        supsup in GNu on PermutedMNIST, LeNet 300-100, s=100, One-Shot with G
               from one image (Figure 3 left; the paper: 94.91% after 250 tasks)
    nns        supsup in NNs against GNu with the same settings (s=500, Figure 4)
    batche     batche against standard in GG, and batche in GNu with One-Shot (Figure 5-right) and with
               every task's factors tried (the lowest entropy)
    hopsupsup  HopSupSup on SplitMNIST in GNu as the authors' script (FC 2048-2048, SGD mask training,
               carried recovery over each task's whole test set): how often each task's mask is
               recovered, and the accuracy
    inference  One-Shot and Binary: time per test batch and peak memory for k masks
               (LeNet 300-100, s=500), and the memory of the 2,500-mask model
    batche-inference  BatchE's One-Shot over the factors and lowest, batch by batch and across
               test batches (FC 1024-1024, s=500, k tasks)

    python bench/supsup.py gnu --data-dir ../shared/datasets [--tasks 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from _common import run_cells

from harness.grid import make_cell
from methods import METHODS
from results.metrics import accuracy_matrix

TRAINING = {"probe_every": 0, "eval_every_segments": 10, "eval_samples": 0}


def cell(method: str, scenario: str, settings: dict, tasks: int, steps: int, backbone: str, seed: int):  # noqa: ANN201
    return make_cell(
        method,
        "permuted_mnist",
        scenario,
        method_settings=settings,
        stream_settings={"num_tasks": tasks, "steps_per_task": steps},
        backbone=backbone,
        training=TRAINING,
        seed=seed,
        grid="bench-supsup",
    )


def report(cells: list, args: argparse.Namespace, label: str) -> None:
    runs, evals = run_cells(cells, args.out, args.data_dir)
    print(f"{label}: PermutedMNIST, {args.tasks} tasks x {args.steps} steps, seed {args.seed}")
    print("  method    scenario settings" + " " * 36 + "final-avg  task-inference  masks  samples/s")
    for c in cells:
        defaults = dataclasses.asdict(METHODS.get(c.method).Config())
        settings = {k: v for k, v in c.method_config.items() if defaults.get(k) != v}
        run = runs[runs.cell_id == c.cell_id].iloc[0]
        mine = evals[evals.cell_id == c.cell_id]
        last = mine[mine.segment == mine.segment.max()]
        matrix = accuracy_matrix(evals, c.cell_id)
        inference = last[last.metric == "task_inference_accuracy"].value
        masks = last[last.metric == "diagnostic:masks"].value
        print(
            f"  {c.method:9s} {c.scenario:8s} {str(settings):44s} {np.nanmean(matrix[-1]):9.4f} "
            f"{(inference.mean() if len(inference) else float('nan')):15.4f} "
            f"{(int(masks.iloc[0]) if len(masks) else 0):6d} {run.samples_per_second:10.0f}"
        )


def gnu(args: argparse.Namespace) -> None:
    settings = {"output_size": 100, "objective": "superfluous", "inference_images": 1}
    report([cell("supsup", "GNu", settings, args.tasks, args.steps, "lenet_300_100", args.seed)], args, "supsup GNu")


def nns(args: argparse.Namespace) -> None:
    settings = {"output_size": 500}
    cells = [cell("supsup", s, settings, args.tasks, args.steps, "lenet_300_100", args.seed) for s in ("NNs", "GNu")]
    report(cells, args, "supsup NNs vs GNu")


def batche(args: argparse.Namespace) -> None:
    cells = [
        cell("standard", "GG", {}, args.tasks, args.steps, "fc_1024_1024", args.seed),
        cell("batche", "GG", {}, args.tasks, args.steps, "fc_1024_1024", args.seed),
        cell("batche", "GNu", {"output_size": 500}, args.tasks, args.steps, "fc_1024_1024", args.seed),
        cell(
            "batche",
            "GNu",
            {"output_size": 500, "inference": "lowest"},
            args.tasks,
            args.steps,
            "fc_1024_1024",
            args.seed,
        ),
    ]
    report(cells, args, "batche")


def hopsupsup(args: argparse.Namespace) -> None:
    hop = make_cell(
        "hopsupsup",
        "split_mnist",
        "GNu",
        method_settings={"recovery": "carried", "mirror_bias": False, "audit_recovery": True},
        stream_settings={"steps_per_task": args.steps},
        backbone=args.backbone or "fc_2048_2048",
        training={
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "probe_every": 0,
            "eval_samples": 0,
            "eval_batch_size": 4096,  # a task's whole test set in one predict(): the carried recovery's pass
        },
        seed=args.seed,
        grid="bench-supsup",
    )
    runs, evals = run_cells([hop], args.out, args.data_dir)
    mine = evals[evals.cell_id == hop.cell_id]
    recovered = mine[mine.metric == "task_inference_accuracy"].pivot_table(
        index="segment", columns="eval_task", values="value"
    )
    matrix = accuracy_matrix(evals, hop.cell_id)
    print(f"hopsupsup, SplitMNIST GNu, {hop.backbone['hidden']}, {args.steps} steps per task, seed {args.seed}")
    print("share of test batches whose recovered mask is the task's own (row: after task i):")
    print(recovered.to_string(float_format="%.3f"))
    print("accuracy matrix:")
    print(np.array2string(matrix, precision=3))
    last = recovered.iloc[-1]
    print(
        f"after the last task: recovered {last.mean():.3f} of batches, accuracy {np.nanmean(matrix[-1]):.4f}; "
        f"samples/s {runs.iloc[0].samples_per_second:.0f}; storage {runs.iloc[0].storage_bytes / 1e6:.2f} MB"
    )


def inference(args: argparse.Namespace) -> None:
    import torch

    from harness.backbones import PRESETS, backbone_factory
    from harness.meters import PeakMemory
    from methods.base import BuildContext, LabelSpace
    from methods.supsup import SupSup, SupSupConfig

    torch.set_num_threads(2)

    def model(k: int, method: str) -> SupSup:
        config = SupSupConfig(output_size=500, inference=method, inference_images=1)  # type: ignore[arg-type]
        supsup = SupSup(config)
        context = BuildContext(
            "GNu",
            LabelSpace(k, 10, False),
            backbone_factory(PRESETS["lenet_300_100"], (1, 28, 28)),
            (1, 28, 28),
            torch.device("cpu"),
            0,
        )
        supsup.build(context)
        generator = torch.Generator().manual_seed(k)
        for layer in supsup.layers:  # k random masks, written packed as training would leave them
            bank = layer.bank
            bank.bits = torch.randint(0, 256, (k, bank.row_bytes), dtype=torch.uint8, generator=generator)
            bank.count, bank.versions = k, [0] * k
            bank.ones = bank.mix(torch.ones(k)).to(torch.int32)
        supsup.slot_task = list(range(k))
        supsup.allocated = k
        return supsup

    x = torch.rand(128, 1, 28, 28)
    print("task inference for one test batch of 128 (inferred from one image), LeNet 300-100, s=500, CPU, 2 threads")
    print("  algorithm  masks  ms/batch  peak-RSS-MB  packed-masks-MB")
    for method in ("one_shot", "binary"):
        for k in (10, 100, 1000):
            supsup = model(k, method)
            supsup.predict(x, None)
            memory = PeakMemory(torch.device("cpu"))
            started = time.perf_counter()
            repeats = 5
            for _ in range(repeats):
                supsup.predict(x, None)
            elapsed = (time.perf_counter() - started) / repeats
            packed = sum(layer.bank.nbytes() for layer in supsup.layers)
            peak = memory.peak_bytes() / 2**20
            print(f"  {method:9s} {k:6d} {elapsed * 1000:9.1f} {peak:12.0f} {packed / 2**20:16.1f}")
            del supsup
    # the Evaluator hands a method as many test batches as GROUP_ELEMENTS holds, of any tasks when the task is
    # hidden (334 MNIST batches of 128): One-Shot infers all of them in one pass, unpacking each mask chunk once
    from harness.evaluation import GROUP_ELEMENTS

    group = GROUP_ELEMENTS // x.numel()
    batches = [torch.rand(128, 1, 28, 28) for _ in range(group)]
    print(f"Task inference across {group} test batches at once (Method.predict_many), amortised per test batch")
    print("  algorithm  masks  infer-ms  infer+classify-ms  peak-RSS-MB  same-as-per-batch")
    for method, masks in (("one_shot", (10, 100, 1000, 2500)), ("binary", (10, 100, 1000))):
        for k in masks:
            supsup = model(k, method)
            alone = [int(supsup.predict(x, None).task[0]) for x in batches[:8]]
            memory = PeakMemory(torch.device("cpu"))
            started = time.perf_counter()
            slots = supsup.infer_slots(batches)
            inferred = (time.perf_counter() - started) / len(batches)
            started = time.perf_counter()
            together = [int(p.task[0]) for p in supsup.predict_many(batches, None)]
            elapsed = (time.perf_counter() - started) / len(batches)
            same = alone == together[:8] and slots == together
            print(
                f"  {method + '*':9s} {k:6d} {inferred * 1000:9.1f} {elapsed * 1000:18.1f} "
                f"{memory.peak_bytes() / 2**20:12.0f} {same!s:>18s}"
            )
            del supsup
    supsup = model(2500, "one_shot")
    before = PeakMemory(torch.device("cpu")).peak_bytes()
    memory = PeakMemory(torch.device("cpu"))
    supsup.predict(x, None)
    packed = sum(layer.bank.nbytes() for layer in supsup.layers)
    print(
        f"2,500-mask LeNet 300-100 model (s=500): packed masks {packed / 2**20:.1f} MB; process RSS "
        f"{before / 2**20:.0f} MB with the model built, peak {memory.peak_bytes() / 2**20:.0f} MB "
        "during one One-Shot test batch"
    )


def batche_inference(args: argparse.Namespace) -> None:
    """BatchE's task inference from one image a test batch, batch by batch against across 100 batches at once."""
    import torch

    from harness.backbones import PRESETS, backbone_factory
    from methods.base import BuildContext, LabelSpace
    from methods.batche import BatchE, BatchEConfig

    torch.set_num_threads(2)

    def model(k: int, inference: str) -> BatchE:
        batche = BatchE(BatchEConfig(output_size=500, inference_images=1, inference=inference))  # type: ignore[arg-type]
        factory = backbone_factory(PRESETS["fc_1024_1024"], (1, 28, 28))
        batche.build(BuildContext("GNu", LabelSpace(k, 10, False), factory, (1, 28, 28), torch.device("cpu"), 0))
        generator = torch.Generator().manual_seed(k)
        for layer in batche.layers:  # trained factors are far from their +-1 start
            layer.r.data = torch.randn(layer.r.shape, generator=generator)
            layer.s.data = torch.randn(layer.s.shape, generator=generator)
        batche.seen = list(range(k))
        return batche

    batches = [torch.rand(128, 1, 28, 28) for _ in range(100)]
    print("BatchE task inference from one image of each test batch of 128, FC 1024-1024, s=500, CPU, 2 threads")
    print("  algorithm  tasks  batch-by-batch-ms  across-100-batches-ms  same-as-per-batch  (classification included)")
    for inference in ("one_shot", "lowest"):
        for k in (10, 100, 250):
            batche = model(k, inference)
            started = time.perf_counter()
            alone = [int(batche.predict(x, None).task[0]) for x in batches[:10]]
            one_by_one = (time.perf_counter() - started) / 10
            started = time.perf_counter()
            together = [int(p.task[0]) for p in batche.predict_many(batches, None)]
            many = (time.perf_counter() - started) / len(batches)
            same = alone == together[:10]
            print(f"  {inference:9s} {k:6d} {one_by_one * 1000:18.1f} {many * 1000:22.1f} {same!s:>18s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["gnu", "nns", "batche", "hopsupsup", "inference", "batche-inference"])
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/supsup"))
    args = parser.parse_args()
    args.tasks = args.tasks or {"gnu": 50, "nns": 20, "batche": 10}.get(args.what, 0)
    if args.what == "hopsupsup" and args.steps == 1000:
        args.steps = 100  # about one epoch of a SplitMNIST task, as the authors train HopSupSup
    commands = {"gnu": gnu, "nns": nns, "batche": batche, "hopsupsup": hopsupsup, "inference": inference}
    commands["batche-inference"] = batche_inference
    commands[args.what](args)


if __name__ == "__main__":
    main()
