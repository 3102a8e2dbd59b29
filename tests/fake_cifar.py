"""Small CIFAR-10 and CIFAR-100 folders in the exact format of the real pickles (bytes keys, protocol 2)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: 1024 red, 1024 green, 1024 blue


def _dump(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10(root: Path, per_class: int = 3, seed: int = 0, test_count: int = 130) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        labels = [int(c) for c in rng.permutation(np.repeat(np.arange(10), per_class))]
        _dump(
            folder / f"data_batch_{i}",
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": labels,
                b"data": _images(len(labels), rng),
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(len(labels))],
            },
        )
    count = test_count
    labels = [int(c) for c in np.arange(count) % 10]
    _dump(
        folder / "test_batch",
        {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": _images(count, rng), b"filenames": []},
    )
    _dump(folder / "batches.meta", {b"label_names": [f"class{c}".encode() for c in range(10)], b"num_vis": 3072})
    return folder


def write_cifar100(root: Path, per_class: int = 25, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for split, n in (("train", per_class), ("test", per_class)):
        fine = [int(c) for c in rng.permutation(np.repeat(np.arange(100), n))]
        _dump(
            folder / split,
            {
                b"filenames": [f"{split}_{j}.png".encode() for j in range(len(fine))],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": fine,
                b"coarse_labels": [c // 5 for c in fine],
                b"data": _images(len(fine), rng),
            },
        )
    _dump(folder / "meta", {b"fine_label_names": [f"f{c}".encode() for c in range(100)], b"coarse_label_names": []})
    return folder
