"""MNIST and Fashion-MNIST from their IDX files, checked against torchvision's md5s and cached as arrays.

Folders use torchvision's layout: ``<root>/MNIST/raw/train-images-idx3-ubyte.gz`` (and the same under
``FashionMNIST``), or the extracted files torchvision leaves beside the ``.gz`` ones. A ``.gz`` file must match
torchvision's md5; an extracted one of torchvision's size must match the md5 of torchvision's file decompressed
(a small extracted file is a fake in the real format, as the tests write).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from scenarios.datasets import (
    DataCorruptError,
    DatasetSpec,
    ImageInfo,
    atomic_save,
    cached_arrays,
    check_md5,
    file_stamp,
    locate_files,
    register_dataset,
)

# torchvision's published md5 of each original .gz file
IDX_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "MNIST": {
        "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "FashionMNIST": {
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
STATS = {"MNIST": ((0.1307,), (0.3081,)), "FashionMNIST": ((0.2860,), (0.3530,))}  # pixel mean and std in [0, 1]
SIDE = 28
TEST_EXAMPLES = 10_000


def read_idx(data: bytes) -> np.ndarray:
    """Decode an IDX file (LeCun's format: big-endian header, then the array)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataCorruptError("not an IDX file: bad magic number")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataCorruptError(f"IDX type code {data[2]:#x} is not one of {sorted(dtypes)}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataCorruptError(f"IDX file has {len(data)} bytes, its header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _raw_file(raw_dir: Path, gz_name: str) -> Path | None:
    """The .gz file, or the extracted file torchvision leaves beside it."""
    for candidate in (raw_dir / gz_name, raw_dir / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(name: str, root: Path) -> None:
    from harness.torchvision_compat import import_torchvision

    datasets = import_torchvision().datasets
    cls = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}[name]
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        for train in (True, False):
            cls(root=str(root), train=train, download=True)


def locate_raw_dir(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """The folder holding the dataset's four IDX files, downloading them if needed and allowed."""
    files = [gz for gz, _ in IDX_FILES[name].values()]
    fetch = (lambda root: _download(name, root)) if download else None  # looked up when called: tests replace it
    return locate_files(name, f"{name}/raw", files, data_dir, fetch, lambda raw, gz: _raw_file(raw, gz) is not None)


def _source_stamp(raw_dir: Path, name: str) -> dict[str, list]:
    paths = {part: _raw_file(raw_dir, gz) for part, (gz, _) in IDX_FILES[name].items()}
    assert all(paths.values())
    return file_stamp(paths)  # type: ignore[arg-type]


# The md5 and size of each of torchvision's files decompressed (``gzip -dc FILE | md5sum``, from .gz files whose
# md5s match torchvision's): torchvision publishes the .gz md5s only, and leaves the extracted files beside them.
IDX_RAW_MD5: dict[str, dict[str, str]] = {
    "MNIST": {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
IDX_RAW_BYTES = {"train_images": 47_040_016, "train_labels": 60_008, "test_images": 7_840_016, "test_labels": 10_008}


def _check_extracted(path: Path, data: bytes, name: str, part: str) -> None:
    """Refuse an extracted file of torchvision's size that is not torchvision's file (e.g. all zeros)."""
    if len(data) != IDX_RAW_BYTES[part]:
        return
    actual, expected = hashlib.md5(data).hexdigest(), IDX_RAW_MD5[name][part]
    if actual != expected:
        raise DataCorruptError(f"{path} has md5 {actual}, torchvision's {name} file decompressed has {expected}")


def _extract(raw_dir: Path, name: str, target: Path) -> None:
    for part, (gz, md5) in IDX_FILES[name].items():
        path = _raw_file(raw_dir, gz)
        assert path is not None
        if path.suffix == ".gz":
            check_md5(path, md5, name)
            data = gzip.decompress(path.read_bytes())
        else:
            data = path.read_bytes()
            _check_extracted(path, data, name, part)
        try:
            array = read_idx(data)
        except DataCorruptError as error:
            raise DataCorruptError(f"{path}: {error}") from None
        atomic_save(array.astype(np.int64) if part.endswith("labels") else array, target / f"{part}.npy")


def prepare_idx_dataset(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """Make sure the decoded arrays are in the cache; return their folder. Safe to call from many processes."""
    raw_dir = locate_raw_dir(name, data_dir, download)
    return cached_arrays(name, _source_stamp(raw_dir, name), lambda target: _extract(raw_dir, name, target))


def write_fake_idx(name: str, root: Path, per_class: int = 20, test_per_class: int = 10, seed: int = 0) -> Path:
    """A small copy of the dataset: random 28x28 images, the same number of each digit, as the extracted IDX files
    torchvision leaves in ``<root>/<name>/raw`` (a ``.gz`` file would have to be torchvision's own)."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), count))
        images = rng.integers(0, 256, (len(labels), SIDE, SIDE), dtype=np.uint8)
        for part, array in (("images", images), ("labels", labels)):
            gz, _ = IDX_FILES[name][f"{split}_{part}"]
            (raw / gz.removesuffix(".gz")).write_bytes(idx_bytes(array))
    return raw


def _register(name: str) -> None:
    info = ImageInfo((1, SIDE, SIDE), 10, TEST_EXAMPLES, *STATS[name])
    locate, prepare = functools.partial(locate_raw_dir, name), functools.partial(prepare_idx_dataset, name)
    register_dataset(DatasetSpec(name, locate, prepare, functools.partial(write_fake_idx, name), info))


for _name in IDX_FILES:
    _register(_name)
