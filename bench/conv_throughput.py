"""Training throughput and peak memory of every method with a conv kit on GEM's ResNet-18 (SplitCIFAR100).

The plain loop is what one would write by hand for the same model: TorchKit's
GEM ResNet-18 and a 5-way head, RMSprop, batch 128, images gathered from the
uint8 training set on the device with the same crop and flip as the stream.
Each method runs through ``run_cell`` on two SplitCIFAR100 tasks in GG.
``--fake-data`` writes a CIFAR-100 folder of random images in the real pickle
format and nearly its size (49,900 training images), for machines without CIFAR: speed
does not depend on the pixels.

    python bench/conv_throughput.py --data-dir DATA_ROOT [--steps 100] [--threads 2]
    python bench/conv_throughput.py --fake-data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import ROOT  # noqa: F401  (puts the project on the path)

from harness.backbones import PRESETS, backbone_factory
from harness.grid import make_cell
from harness.meters import PeakMemory
from harness.runner import WorkerSettings, run_cell
from methods import METHODS
from methods.base import TorchKit
from scenarios.cifar_data import write_cifar100
from scenarios.datasets import image_info, load_arrays
from scenarios.in_memory import random_crop_and_flip


def plain_loop(data_dir: Path, steps: int) -> tuple[float, int]:
    arrays = load_arrays("CIFAR100", data_dir)
    images = torch.from_numpy(arrays.train_images)
    labels = torch.from_numpy(arrays.train_labels)
    pool = torch.nonzero(labels < 5).squeeze(1)
    backbone = backbone_factory(PRESETS["gem_resnet18"], (3, 32, 32))(TorchKit())
    model = torch.nn.Sequential(backbone.trunk, torch.nn.Linear(backbone.feature_dim, 5))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    info = image_info("CIFAR100")
    mean, std = (torch.tensor(s)[:, None, None] for s in (info.mean, info.std))
    generator = torch.Generator().manual_seed(0)
    memory = PeakMemory(torch.device("cpu"))

    def step() -> None:
        index = pool[torch.randint(len(pool), (128,), generator=generator)]
        x = (random_crop_and_flip(images[index].float() / 255, generator) - mean) / std
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 128 / (time.perf_counter() - start), memory.peak_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--fake-data", action="store_true", help="random images in CIFAR-100's real format and size")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = args.data_dir
    if args.fake_data:
        data_dir = Path(tempfile.mkdtemp(prefix="fake-cifar-"))
        write_cifar100(data_dir, per_class=499)  # one short of the real count, which would demand the real md5
    print(f"GEM ResNet-18 (nf=20), SplitCIFAR100 GG, batch 128, {args.steps} steps, {args.threads} threads, CPU")
    plain, plain_memory = plain_loop(data_dir, args.steps)
    print(f"  {'method':15s} {'images/s':>9s} {'vs plain':>9s} {'peak RSS MB':>12s}")
    print(f"  {'plain loop':15s} {plain:9.0f} {1.0:9.2f} {plain_memory / 2**20:12.0f}")
    settings = WorkerSettings(str(data_dir), "cpu", args.threads)
    for name in METHODS.names():
        cls = METHODS.get(name)
        if "conv" not in cls.backbones or "GG" not in cls.scenarios:
            continue
        cell = make_cell(
            name,
            "split_cifar100",
            "GG",
            stream_settings={"num_tasks": 2, "steps_per_task": args.steps // 2},
            backbone="gem_resnet18",
            training={"probe_every": 0, "eval_samples": 256},
        )
        run = run_cell(cell, settings).run
        if run["status"] != "ok":
            print(f"  {name:15s} failed: {run['error']}")
            continue
        speed = run["samples_per_second"]
        print(f"  {name:15s} {speed:9.0f} {speed / plain:9.2f} {run['peak_memory_bytes'] / 2**20:12.0f}")


if __name__ == "__main__":
    main()
