"""PermutedMNIST: every task is MNIST with one fixed pixel permutation (task 0 unpermuted, as in PSP sec. 4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from scenarios.mnist import ImageInputConfig, MnistFamilyStream, register_mnist_family
from scenarios.streams import derived_seed


@dataclass(frozen=True)
class PermutedConfig(ImageInputConfig):
    num_tasks: int = field(default=10, metadata={"min": 1})  # PSP: 50; SupSup: 250 (GNu), 2500 (NNs)
    steps_per_task: int = field(default=1000, metadata={"min": 1})  # batches per task (both papers: 1000)
    first_task_unpermuted: bool = True  # PSP keeps task 0 as plain MNIST


class PermutedStream(MnistFamilyStream):
    Config = PermutedConfig

    def __init__(self, config: PermutedConfig, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        pixels = int(torch.tensor(self.input_shape).prod())
        generator = torch.Generator().manual_seed(derived_seed(seed, "permutations"))
        permutations = torch.stack([torch.randperm(pixels, generator=generator) for _ in range(config.num_tasks)])
        if config.first_task_unpermuted:
            permutations[0] = torch.arange(pixels)
        self.permutations = permutations.to(device)

    def transform(self, task: int, images: Tensor) -> Tensor:
        if task == 0 and self.config.first_task_unpermuted:
            return images
        flat = images.flatten(1).index_select(1, self.permutations[task])
        return flat.view_as(images)


register_mnist_family("permuted", PermutedStream)
