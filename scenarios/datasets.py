"""The dataset registry: each dataset the streams read, how it is found, checked and cached, and a fake of it.

A dataset module registers a ``DatasetSpec`` per dataset (``register_dataset``): where its files sit under a
root, how to find them (``locate``: the data root, then ``<cache>/torchvision``, then a download through
torchvision into it), how to check and cache them (``prepare``: decoded once into ``.npy`` arrays in the cache,
``$HARNESS_CACHE_DIR``, default ``~/.cache/continual-harness``), what a stream needs to know before reading them
(``info``), and a small fake in the real on-disk format for tests (``write_fake``). The functions below answer
by name for every dataset (``prepare_dataset``, ``dataset_status``, ``load_arrays``), and the helpers are what
the dataset modules share. This module imports no dataset module: they import it.

The root comes from ``--data-dir`` or ``$HARNESS_DATA_DIR``; ``$HARNESS_OFFLINE=1`` turns downloads off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.cache import cache_dir
from harness.registry import Registry

DATA_DIR_ENV = "HARNESS_DATA_DIR"
OFFLINE_ENV = "HARNESS_OFFLINE"  # set to 1 to never try a download
ARRAY_PARTS = ("train_images", "train_labels", "test_images", "test_labels")  # the cached .npy files


class DataMissingError(FileNotFoundError):
    """A dataset that is neither on disk nor downloadable; the message says what to put where."""

    def __str__(self) -> str:
        return str(self.args[0])


class DataCorruptError(ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ImageArrays:
    """A labelled image dataset as uint8 images [N, H, W] or [N, C, H, W] and int64 labels [N], for both splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class ImageInfo:
    """What a stream needs to know of an in-memory image dataset before reading it (for plans and dry runs)."""

    shape: tuple[int, int, int]  # (channels, height, width) of an image
    classes: int  # labels are 0 .. classes - 1
    test_examples: int  # in the real test split
    mean: tuple[float, ...]  # per channel, of the training images in [0, 1]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset the streams read, by the name in their ``datasets``.

    ``locate(data_dir, download)`` returns the folder holding its files or raises DataMissingError saying what to
    put where; ``prepare(data_dir)`` checks the files and caches what streams read, returning that folder (the
    four ``ARRAY_PARTS`` for an in-memory dataset); ``write_fake(root)`` writes a small copy in the real on-disk
    format under a data root and returns its folder. ``info`` is None for a dataset streamed from disk as it goes
    (ImageNet), which ``load_arrays`` refuses.
    """

    name: str
    locate: Callable[[Path | None, bool], Path]
    prepare: Callable[[Path | None], Path]
    write_fake: Callable[[Path], Path]
    info: ImageInfo | None = None
    downloadable: bool = True  # torchvision fetches it when missing (unless offline)


# Datasets come with the streams that read them, so an outside package's datasets register when its streams load.
DATASETS: Registry[DatasetSpec] = Registry("dataset", entry_point_group="harness.streams")


def register_dataset(dataset: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(dataset.name)(dataset)


def prepare_dataset(name: str, data_dir: Path | None) -> Path:
    """Find, check and cache a dataset (ImageNet is only checked, never copied); raises DataMissingError if it
    cannot, and UnknownNameError (naming the known ones) for a name no module registered."""
    return DATASETS.get(name).prepare(data_dir)


def dataset_status(name: str, data_dir: Path | None) -> tuple[bool, str]:
    """Whether a dataset is on disk now (nothing is downloaded or extracted), and where or what to do."""
    dataset = DATASETS.get(name)
    try:
        return True, str(dataset.locate(data_dir, False))
    except DataMissingError:
        return False, "missing; downloaded through torchvision at run time" if dataset.downloadable else "missing"


def image_info(name: str) -> ImageInfo:
    info = DATASETS.get(name).info
    if info is None:
        raise ValueError(f"dataset {name} is read from disk as it goes, not held in memory as arrays")
    return info


@functools.lru_cache(maxsize=8)
def load_arrays(name: str, data_dir: Path | None) -> ImageArrays:
    """An in-memory dataset as arrays read from the cache; kept for the life of the (reused) worker process."""
    image_info(name)
    folder = prepare_dataset(name, data_dir)
    return ImageArrays(**{part: np.load(folder / f"{part}.npy") for part in ARRAY_PARTS})


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def data_roots(data_dir: Path | None) -> list[Path]:
    """Where a dataset is looked for, in order; the last is where downloads go."""
    return ([data_dir] if data_dir else []) + [cache_dir() / "torchvision"]


def downloads_off() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def locate_files(
    name: str,
    folder: str,
    files: Sequence[str],
    data_dir: Path | None,
    download: Callable[[Path], None] | None,
    present: Callable[[Path, str], bool] = lambda folder, file: (folder / file).is_file(),
) -> Path:
    """``<root>/<folder>`` of the first data root holding every file; else ``download(root)`` (torchvision's,
    into the last root) when given and downloads are on; else DataMissingError naming the files and folders."""
    roots = data_roots(data_dir)
    for root in roots:
        if all(present(root / folder, file) for file in files):
            return root / folder

    def missing(why: str) -> DataMissingError:
        where = " or ".join(str(root / folder) for root in roots)
        return DataMissingError(
            f"dataset {name} not found: put {', '.join(files)} in {where} (or pass --data-dir ROOT with "
            f"ROOT/{folder}/); {why}"
        )

    if download is None or downloads_off():
        raise missing(f"downloads are off (download=False or ${OFFLINE_ENV})")
    try:
        download(roots[-1])
    except Exception as error:  # offline, mirror down, ...: all end in the same advice
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise missing(f"the download failed ({reason[:160]})") from None
    return roots[-1] / folder


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, name: str) -> None:
    """Refuse a file that claims to be torchvision's copy of a dataset file but is not."""
    if (actual := md5(path)) != expected:
        raise DataCorruptError(f"{path} has md5 {actual}, torchvision's {name} file has {expected}")


def atomic_save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_stamp(paths: Mapping[str, Path]) -> dict[str, list]:
    """What identifies the source files of a cache: each one's resolved path, size and modification time."""
    stamp = {}
    for key, path in paths.items():
        st = path.stat()
        stamp[key] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return stamp


def cached_arrays(name: str, stamp: dict[str, list], extract: Callable[[Path], None]) -> Path:
    """The cache folder of a dataset's decoded arrays, (re)written by ``extract(folder)`` unless the stamp of
    its source files still matches. Safe to call from many processes: every file is replaced atomically."""
    target = cache_dir() / "arrays" / name
    stamp_path = target / "source.json"

    # The stamp records the sources and the size and md5 of every array written: a truncated or damaged array (a
    # disk that filled, a stray write) is extracted again, never trusted for ever.
    try:
        recorded = json.loads(stamp_path.read_text())
        outputs = recorded["outputs"]
        if (
            recorded["source"] == stamp
            and outputs
            and all(
                (target / file).stat().st_size == size and md5(target / file) == digest
                for file, (size, digest) in outputs.items()
            )
        ):
            return target
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or older stamp: extract again
        pass
    extract(target)
    outputs = {p.name: [p.stat().st_size, md5(p)] for p in sorted(target.glob("*.npy"))}
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".source.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"source": stamp, "outputs": outputs}, f)
    os.replace(tmp, stamp_path)
    return target


def save_split(target: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """One split's arrays as the cache holds them: ``<split>_images.npy`` (uint8) and ``<split>_labels.npy``."""
    atomic_save(images, target / f"{split}_images.npy")
    atomic_save(labels, target / f"{split}_labels.npy")
