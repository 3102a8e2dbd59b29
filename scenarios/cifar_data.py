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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenarios.datasets import (
    OFFLINE_ENV,
    DataCorruptError,
    DataMissingError,
    ImageArrays,
    _atomic_save,
    _md5,
    cache_dir,
    cached_arrays,
)


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train: tuple[tuple[str, str], ...]  # (file, torchvision's md5)
    test: tuple[tuple[str, str], ...]
    label_key: str
    real_count: dict[str, int]  # examples in each real file


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
    ),
    "CIFAR100": CifarLayout(
        "cifar-100-python",
        (("train", "16019d7e3df5f24257cddd939b257f8d"),),
        (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        "fine_labels",
        {"train": 50000, "test": 10000},
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


def _missing_message(name: str, roots: list[Path], why: str) -> str:
    layout = CIFAR_FILES[name]
    files = ", ".join(f for f, _ in layout.train + layout.test)
    where = " or ".join(str(r / layout.folder) for r in roots)
    return f"dataset {name} not found: put {files} in {where} (torchvision's layout under --data-dir); {why}"


def _download(name: str, root: Path) -> None:
    from harness.torchvision_compat import import_torchvision

    datasets = import_torchvision().datasets
    cls = {"CIFAR10": datasets.CIFAR10, "CIFAR100": datasets.CIFAR100}[name]
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        cls(root=str(root), train=True, download=True)


def locate_cifar_dir(name: str, data_dir: Path | None, download: bool = True) -> Path:
    layout = CIFAR_FILES[name]
    roots = ([data_dir] if data_dir else []) + [cache_dir() / "torchvision"]
    for root in roots:
        folder = root / layout.folder
        if all((folder / f).is_file() for f, _ in layout.train + layout.test):
            return folder
    if not download or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataMissingError(_missing_message(name, roots, f"downloads are off (download=False or ${OFFLINE_ENV})"))
    try:
        _download(name, roots[-1])
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataMissingError(_missing_message(name, roots, f"the download failed ({reason[:160]})")) from None
    return roots[-1] / layout.folder


def _read_split(folder: Path, name: str, files: tuple[tuple[str, str], ...]) -> tuple[np.ndarray, np.ndarray]:
    layout = CIFAR_FILES[name]
    images, labels = [], []
    for file, md5 in files:
        path = folder / file
        x, y = read_cifar_pickle(path, layout.label_key)
        if len(x) == layout.real_count[file] and (actual := _md5(path)) != md5:
            raise DataCorruptError(f"{path} has md5 {actual}, torchvision's {name} file has {md5}")
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def prepare_cifar_dataset(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """Decode the pickles into the cache once (re-done when the files change); return the cache folder."""
    layout = CIFAR_FILES[name]
    folder = locate_cifar_dir(name, data_dir, download)
    stamp = {}
    for file, _ in layout.train + layout.test:
        st = (folder / file).stat()
        stamp[file] = [str((folder / file).resolve()), st.st_size, st.st_mtime_ns]

    def extract(target: Path) -> None:
        for split, files in (("train", layout.train), ("test", layout.test)):
            images, labels = _read_split(folder, name, files)
            _atomic_save(images, target / f"{split}_images.npy")
            _atomic_save(labels, target / f"{split}_labels.npy")

    return cached_arrays(name, stamp, extract)


@functools.lru_cache(maxsize=4)
def load_cifar_dataset(name: str, data_dir: Path | None) -> ImageArrays:
    folder = prepare_cifar_dataset(name, data_dir)
    parts = ("train_images", "train_labels", "test_images", "test_labels")
    return ImageArrays(**{part: np.load(folder / f"{part}.npy") for part in parts})
