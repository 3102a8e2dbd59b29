"""CIFAR-10 and CIFAR-100 from their Python pickles, read straight into uint8 arrays and cached.

Folders use torchvision's layout: ``<root>/cifar-10-batches-py/data_batch_1``
... ``test_batch`` and ``<root>/cifar-100-python/train``, ``test``. The root
is ``--data-dir`` (or ``$HARNESS_DATA_DIR``), then ``<cache>/torchvision``,
where a missing dataset is downloaded through torchvision unless offline.

A pickle whose example count is the real file's (10,000 per CIFAR-10 batch;
50,000 and 10,000 for CIFAR-100) claims to be the real one and must match
torchvision's md5; smaller files in the same format (test fixtures, subsets
made on purpose) are read as they are.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenarios.datasets import (
    DataCorruptError,
    DatasetSpec,
    ImageInfo,
    cached_arrays,
    check_md5,
    file_stamp,
    locate_files,
    register_dataset,
    save_split,
)


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train: tuple[tuple[str, str], ...]  # (file, torchvision's md5)
    test: tuple[tuple[str, str], ...]
    label_key: str
    real_count: dict[str, int]  # examples in each real file
    classes: int
    mean: tuple[float, float, float]  # per-channel mean and std of the training images in [0, 1]
    std: tuple[float, float, float]

    @property
    def files(self) -> list[str]:
        return [file for file, _ in self.train + self.test]


CIFAR_FILES: dict[str, CifarLayout] = {
    "CIFAR10": CifarLayout(
        "cifar-10-batches-py",
        (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        (("test_batch", "40351d587109b95175f43aff81a1287e"),),
        "labels",
        {f"data_batch_{i}": 10000 for i in range(1, 6)} | {"test_batch": 10000},
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "CIFAR100": CifarLayout(
        "cifar-100-python",
        (("train", "16019d7e3df5f24257cddd939b257f8d"),),
        (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        "fine_labels",
        {"train": 50000, "test": 10000},
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle as images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except Exception as error:
        raise DataCorruptError(f"{path} is not a CIFAR pickle ({type(error).__name__}: {error})") from None
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DataCorruptError(f"{path} lacks the 'data' and {label_key!r} entries of a CIFAR pickle")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataCorruptError(f"{path}: data of shape {data.shape} with {len(labels)} labels is not CIFAR's")
    return data.reshape(-1, 3, 32, 32), labels


def _download(name: str, root: Path) -> None:
    from harness.torchvision_compat import import_torchvision

    datasets = import_torchvision().datasets
    cls = {"CIFAR10": datasets.CIFAR10, "CIFAR100": datasets.CIFAR100}[name]
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        cls(root=str(root), train=True, download=True)


def locate_cifar_dir(name: str, data_dir: Path | None, download: bool = True) -> Path:
    layout = CIFAR_FILES[name]
    fetch = (lambda root: _download(name, root)) if download else None
    return locate_files(name, layout.folder, layout.files, data_dir, fetch)


def _read_split(folder: Path, name: str, files: tuple[tuple[str, str], ...]) -> tuple[np.ndarray, np.ndarray]:
    layout = CIFAR_FILES[name]
    images, labels = [], []
    for file, md5 in files:
        path = folder / file
        x, y = read_cifar_pickle(path, layout.label_key)
        if len(x) == layout.real_count[file]:
            check_md5(path, md5, name)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def prepare_cifar_dataset(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """Decode the pickles into the cache once (re-done when the files change); return the cache folder."""
    layout = CIFAR_FILES[name]
    folder = locate_cifar_dir(name, data_dir, download)

    def extract(target: Path) -> None:
        for split, files in (("train", layout.train), ("test", layout.test)):
            save_split(target, split, *_read_split(folder, name, files))

    return cached_arrays(name, file_stamp({file: folder / file for file in layout.files}), extract)


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: 1024 red, 1024 green, 1024 blue


def _dump(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10(root: Path, per_class: int = 3, seed: int = 0, test_count: int = 130) -> Path:
    """A small CIFAR-10 folder in the exact format of the real pickles (bytes keys, protocol 2)."""
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
    """A small CIFAR-100 folder in the exact format of the real pickles (bytes keys, protocol 2)."""
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


def _register(name: str, write_fake: Callable[[Path], Path]) -> None:
    layout = CIFAR_FILES[name]
    test_examples = sum(layout.real_count[file] for file, _ in layout.test)
    info = ImageInfo((3, 32, 32), layout.classes, test_examples, layout.mean, layout.std)
    locate, prepare = functools.partial(locate_cifar_dir, name), functools.partial(prepare_cifar_dataset, name)
    register_dataset(DatasetSpec(name, locate, prepare, write_fake, info))


_register("CIFAR10", write_cifar10)
_register("CIFAR100", write_cifar100)
