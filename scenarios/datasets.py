"""Find, verify, extract and cache the image datasets the streams read.

Data folders use torchvision's layout (``<root>/MNIST/raw/train-images-idx3-ubyte.gz``).
The root comes from ``--data-dir`` or ``$HARNESS_DATA_DIR``; when a dataset is
not there, ``<cache>/torchvision`` is tried, then a download through torchvision
into it. Files are checked against torchvision's md5s once and decoded into
``.npy`` arrays in the cache (``$HARNESS_CACHE_DIR``, default
``~/.cache/continual-harness``), which later loads read directly.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.cache import cache_dir

DATA_DIR_ENV = "HARNESS_DATA_DIR"
OFFLINE_ENV = "HARNESS_OFFLINE"  # set to 1 to never try a download

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


class DataMissingError(FileNotFoundError):
    """A dataset that is neither on disk nor downloadable; the message says what to put where."""

    def __str__(self) -> str:
        return str(self.args[0])


class DataCorruptError(ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ImageArrays:
    """A labelled image dataset as uint8 images [N, H, W] and int64 labels [N], for both splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


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


def _raw_file(raw_dir: Path, gz_name: str) -> Path | None:
    """The .gz file, or the extracted file torchvision leaves beside it."""
    for candidate in (raw_dir / gz_name, raw_dir / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(name: str, roots: list[Path], why: str) -> str:
    files = ", ".join(f for f, _ in IDX_FILES[name].values())
    where = " or ".join(str(r / name / "raw") for r in roots)
    return f"dataset {name} not found: put {files} in {where} (or pass --data-dir ROOT with ROOT/{name}/raw/); {why}"


def _download(name: str, root: Path) -> None:
    from harness.torchvision_compat import import_torchvision

    datasets = import_torchvision().datasets
    cls = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}[name]
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        for train in (True, False):
            cls(root=str(root), train=train, download=True)


def locate_raw_dir(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """The folder holding the dataset's four IDX files, downloading them if needed and allowed."""
    if name not in IDX_FILES:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(IDX_FILES)}")
    roots = ([data_dir] if data_dir else []) + [cache_dir() / "torchvision"]
    for root in roots:
        raw = root / name / "raw"
        if all(_raw_file(raw, gz) for gz, _ in IDX_FILES[name].values()):
            return raw
    if not download or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataMissingError(_missing_message(name, roots, f"downloads are off (download=False or ${OFFLINE_ENV})"))
    try:
        _download(name, roots[-1])
    except Exception as error:  # offline, mirror down, ...: all end in the same advice
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataMissingError(_missing_message(name, roots, f"the download failed ({reason[:160]})")) from None
    return roots[-1] / name / "raw"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _source_stamp(raw_dir: Path, name: str) -> dict[str, list]:
    stamp = {}
    for part, (gz, _) in IDX_FILES[name].items():
        path = _raw_file(raw_dir, gz)
        assert path is not None
        st = path.stat()
        stamp[part] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return stamp


def _extract(raw_dir: Path, name: str, target: Path) -> None:
    from scenarios.idx_md5 import IDX_RAW_MD5

    for part, (gz, md5) in IDX_FILES[name].items():
        path = _raw_file(raw_dir, gz)
        assert path is not None
        if path.suffix == ".gz":
            if (actual := _md5(path)) != md5:
                raise DataCorruptError(f"{path} has md5 {actual}, torchvision's {name} file has {md5}")
            data = gzip.decompress(path.read_bytes())
        else:  # extracted beside the .gz: checked against the md5 of torchvision's file decompressed
            data = path.read_bytes()
            if (actual := hashlib.md5(data).hexdigest()) != IDX_RAW_MD5[name][part]:
                try:
                    read_idx(data)  # a truncated file says so first
                except DataCorruptError as error:
                    raise DataCorruptError(f"{path}: {error}") from None
                raise DataCorruptError(
                    f"{path} has md5 {actual}, torchvision's {name} file decompressed has {IDX_RAW_MD5[name][part]}"
                )
        try:
            array = read_idx(data)
        except DataCorruptError as error:
            raise DataCorruptError(f"{path}: {error}") from None
        _atomic_save(array.astype(np.int64) if part.endswith("labels") else array, target / f"{part}.npy")


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
                (target / file).stat().st_size == size and _md5(target / file) == digest
                for file, (size, digest) in outputs.items()
            )
        ):
            return target
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or older stamp: extract again
        pass
    extract(target)
    outputs = {p.name: [p.stat().st_size, _md5(p)] for p in sorted(target.glob("*.npy"))}
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".source.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"source": stamp, "outputs": outputs}, f)
    os.replace(tmp, stamp_path)
    return target


def prepare_idx_dataset(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """Make sure the decoded arrays are in the cache; return their folder. Safe to call from many processes."""
    raw_dir = locate_raw_dir(name, data_dir, download)
    return cached_arrays(name, _source_stamp(raw_dir, name), lambda target: _extract(raw_dir, name, target))


@functools.lru_cache(maxsize=4)
def load_idx_dataset(name: str, data_dir: Path | None) -> ImageArrays:
    """The dataset as arrays read from the cache; kept for the life of the (reused) worker process."""
    folder = prepare_idx_dataset(name, data_dir)
    arrays = {part: np.load(folder / f"{part}.npy") for part in IDX_FILES[name]}
    return ImageArrays(**arrays)


def prepare_dataset(name: str, data_dir: Path | None) -> Path:
    """Find, check and cache any dataset a stream names (IDX, CIFAR; ImageNet is only checked, never copied);
    raises DataMissingError if it cannot."""
    if name in IDX_FILES:
        return prepare_idx_dataset(name, data_dir)
    from scenarios.cifar_data import CIFAR_FILES, prepare_cifar_dataset

    if name in CIFAR_FILES:
        return prepare_cifar_dataset(name, data_dir)
    if name == "ImageNet":
        from scenarios.imagenet import prepare_imagenet

        return prepare_imagenet(data_dir)
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join([*IDX_FILES, *CIFAR_FILES, 'ImageNet'])}")


def dataset_status(name: str, data_dir: Path | None) -> tuple[bool, str]:
    """Whether a dataset is on disk now (nothing is downloaded or extracted), and where or what to do."""
    from scenarios.cifar_data import CIFAR_FILES, locate_cifar_dir
    from scenarios.imagenet import locate_imagenet

    try:
        if name in IDX_FILES:
            return True, str(locate_raw_dir(name, data_dir, download=False))
        if name in CIFAR_FILES:
            return True, str(locate_cifar_dir(name, data_dir, download=False))
        return True, str(locate_imagenet(data_dir))
    except DataMissingError:
        downloadable = name in IDX_FILES or name in CIFAR_FILES
        return False, "missing; downloaded through torchvision at run time" if downloadable else "missing"
