"""Several seeds of one network trained as one batched computation, against training them one after another.

The workload is the plain loop of ``bench/throughput.py``: an FC network on
PermutedMNIST (one permutation), RMSprop lr 1e-4, batch 128. Sequential: K
seeds, each its own model and optimiser, one after another. Fused: the K
models' parameters stacked along a new first dimension; ``torch.func.vmap`` of
``torch.func.grad`` gives every seed its gradient on its own batch in one call,
and one RMSprop over the stacked tensors updates all of them (RMSprop acts
element by element, so it is exactly K independent optimisers). ``--check``
first verifies that a fused seed follows the same trajectory as the same seed
trained alone.

    python bench/fused_seeds.py --data-dir ../shared/datasets [--seeds 1,2,4,8] [--steps 300]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from _common import append_figures
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from harness.backbones import PRESETS
from scenarios.datasets import load_arrays

BATCH = 128
LR = 1e-4


def make_model(hidden: tuple[int, ...], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    widths = (784, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


class Data:
    """MNIST as float rows, one fixed permutation, and a batch order per seed."""

    def __init__(self, data_dir: Path | None, seeds: int, steps: int) -> None:
        arrays = load_arrays("MNIST", data_dir)
        images = torch.from_numpy(arrays.train_images).view(len(arrays.train_images), -1).float() / 255
        permutation = torch.randperm(784, generator=torch.Generator().manual_seed(0))
        self.x = ((images - 0.1307) / 0.3081)[:, permutation].contiguous()
        self.y = torch.from_numpy(arrays.train_labels)
        generator = torch.Generator().manual_seed(1)
        self.order = torch.stack(
            [torch.randint(len(self.y), (steps, BATCH), generator=generator) for _ in range(seeds)]
        )

    def batch(self, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.order[seed, step]
        return self.x[index], self.y[index]

    def batches(self, seeds: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.order[:seeds, step]
        return self.x[index], self.y[index]  # [K, B, 784], [K, B]


def sequential(models: list[nn.Module], data: Data, steps: int) -> float:
    start = time.perf_counter()
    for seed, model in enumerate(models):
        optimizer = torch.optim.RMSprop(model.parameters(), lr=LR)
        for step in range(steps):
            x, y = data.batch(seed, step)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def fused(models: list[nn.Module], data: Data, steps: int) -> tuple[float, dict[str, torch.Tensor]]:
    params, _ = stack_module_state(models)
    params = {name: p.detach().requires_grad_(False) for name, p in params.items()}
    template = copy.deepcopy(models[0]).to("meta")

    def loss_of(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, p, (x,)), y)

    gradients = vmap(grad(loss_of))
    stacked = list(params.values())
    optimizer = torch.optim.RMSprop(stacked, lr=LR)
    start = time.perf_counter()
    for step in range(steps):
        x, y = data.batches(len(models), step)
        for tensor, g in zip(stacked, gradients(params, x, y).values(), strict=True):
            tensor.grad = g
        optimizer.step()
    return time.perf_counter() - start, params


def check_same_trajectory(hidden: tuple[int, ...], data: Data, steps: int = 20) -> float:
    """Largest difference between a seed trained alone and the same seed inside a fused group."""
    alone = [make_model(hidden, seed) for seed in range(3)]
    together = [make_model(hidden, seed) for seed in range(3)]
    sequential(alone, data, steps)
    _, params = fused(together, data, steps)
    worst = 0.0
    for seed, model in enumerate(alone):
        for name, tensor in model.named_parameters():
            worst = max(worst, float((tensor.detach() - params[name][seed]).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seeds", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--backbones", default="lenet_300_100,fc_1024_1024")
    parser.add_argument("--check", action="store_true", help="verify fused seeds match seeds trained alone")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fused_seeds.parquet"))
    args = parser.parse_args()
    counts = [int(k) for k in args.seeds.split(",")]
    data = Data(args.data_dir, max(counts), args.steps)
    rows = []
    print("| backbone | seeds | one after another (samples/s) | fused with vmap (samples/s) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for backbone in args.backbones.split(","):
        hidden = PRESETS[backbone].hidden
        if args.check:
            print(
                f"  {backbone}: largest parameter difference after 20 steps, alone vs fused: "
                f"{check_same_trajectory(hidden, data):.2e}"
            )
        for k in counts:
            samples = k * args.steps * BATCH
            alone = samples / sequential([make_model(hidden, s) for s in range(k)], data, args.steps)
            together = samples / fused([make_model(hidden, s) for s in range(k)], data, args.steps)[0]
            print(f"| {backbone} | {k} | {alone:,.0f} | {together:,.0f} | {together / alone:.2f} |")
            rows.append(
                {
                    "backbone": backbone,
                    "seeds": k,
                    "sequential": alone,
                    "fused": together,
                    "threads": torch.get_num_threads(),
                    "steps": args.steps,
                    "measured_at": time.time(),
                }
            )
    append_figures(pd.DataFrame(rows), args.out)


if __name__ == "__main__":
    main()
