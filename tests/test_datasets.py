"""Finding, checking, decoding and caching datasets; the torchvision import on CPU-only torch."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import scenarios.datasets as datasets
from harness.torchvision_compat import import_torchvision
from scenarios.datasets import IDX_FILES, DataCorruptError, DataMissingError, prepare_idx_dataset, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_decodes_the_header_and_the_array() -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(idx_bytes(array)), array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01", "bad magic"),
        (idx_bytes(np.zeros((2, 2)))[:-1], "header says"),
        (b"\x00\x00\x07\x01", "type"),
    ],
)
def test_read_idx_refuses_broken_files(data: bytes, message: str) -> None:
    with pytest.raises(DataCorruptError, match=message):
        read_idx(data)


def copy_mnist(source: Path, root: Path) -> None:
    (root / "MNIST" / "raw").mkdir(parents=True)
    for gz, _ in IDX_FILES["MNIST"].values():
        shutil.copy(source / "MNIST" / "raw" / gz, root / "MNIST" / "raw" / gz)


def test_a_file_that_is_not_torchvisions_is_refused(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    copy_mnist(data_dir, tmp_path / "data")
    labels = tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(10))))
    with pytest.raises(
        DataCorruptError, match="t10k-labels-idx1-ubyte.gz has md5 .*, torchvision's MNIST file has ec29"
    ):
        prepare_idx_dataset("MNIST", tmp_path / "data")


def test_decoded_arrays_are_cached_and_reused(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    folder = prepare_idx_dataset("MNIST", data_dir)
    images = np.load(folder / "train_images.npy")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(np.load(folder / "test_labels.npy")).tolist()[:2] == [980, 1135]
    stamp = (folder / "train_images.npy").stat().st_mtime_ns
    monkeypatch.setattr(datasets, "_extract", lambda *args: pytest.fail("the cache should have been used"))
    assert prepare_idx_dataset("MNIST", data_dir) == folder
    assert (folder / "train_images.npy").stat().st_mtime_ns == stamp


def test_missing_data_is_downloaded_into_the_cache(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    downloads: list[Path] = []

    def fake_torchvision_download(name: str, root: Path) -> None:  # what torchvision leaves behind
        downloads.append(root)
        copy_mnist(data_dir, root)

    monkeypatch.setattr(datasets, "_download", fake_torchvision_download)
    prepare_idx_dataset("MNIST", tmp_path / "empty")
    assert downloads == [tmp_path / "cache" / "torchvision"]
    prepare_idx_dataset("MNIST", None)  # found in the cache now: no second download
    assert len(downloads) == 1


def test_a_failed_download_says_what_to_put_where(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)

    def offline(name: str, root: Path) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "_download", offline)
    with pytest.raises(DataMissingError, match=r"put train-images-idx3-ubyte.gz.* in .*no-data/FashionMNIST/raw"):
        prepare_idx_dataset("FashionMNIST", tmp_path / "no-data")


def test_torchvision_imports_on_this_torch() -> None:
    torchvision = import_torchvision()
    assert hasattr(torchvision.datasets, "MNIST") and hasattr(torchvision.datasets, "FashionMNIST")


# ---- issue 14: every file checked, a damaged cache rebuilt --------------------------------------------------------


def mnist_with(source: Path, root: Path, extracted: dict[str, bytes]) -> Path:
    """A MNIST folder with torchvision's .gz files, but the parts in ``extracted`` as extracted (uncompressed)
    files instead, as torchvision leaves them beside the .gz files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, (gz, _) in IDX_FILES["MNIST"].items():
        if part in extracted:
            (raw / gz.removesuffix(".gz")).write_bytes(extracted[part])
        else:
            (raw / gz).symlink_to(source / "MNIST" / "raw" / gz)
    return raw


def test_a_right_sized_extracted_file_of_zeros_is_refused(data_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    zeros = idx_bytes(np.zeros((60000, 28, 28), dtype=np.uint8))  # the header is right, the images are not
    raw = mnist_with(data_dir, tmp_path / "data", {"train_images": zeros})
    with pytest.raises(DataCorruptError) as error:
        prepare_idx_dataset("MNIST", tmp_path / "data")
    expected = "has md5 .*, torchvision's MNIST file decompressed has 6bbc9ace898e44ae57da46a324031adb"
    assert str(error.value).startswith(str(raw / "train-images-idx3-ubyte")) and re.search(expected, str(error.value))


def test_an_extracted_file_that_is_torchvisions_is_read(data_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    labels = gzip.decompress((data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    mnist_with(data_dir, tmp_path / "data", {"test_labels": labels})
    folder = prepare_idx_dataset("MNIST", tmp_path / "data")
    assert np.bincount(np.load(folder / "test_labels.npy")).tolist()[:2] == [980, 1135]


def test_a_truncated_extracted_file_is_named(data_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    images = gzip.decompress((data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").read_bytes())
    raw = mnist_with(data_dir, tmp_path / "data", {"train_images": images[:1000]})
    message = f"{raw / 'train-images-idx3-ubyte'}: IDX file has 1000 bytes, its header says 47040016"
    with pytest.raises(DataCorruptError, match=re.escape(message)):
        prepare_idx_dataset("MNIST", tmp_path / "data")


def test_a_truncated_or_damaged_cached_array_is_extracted_again(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    array = np.arange(1000, dtype=np.int64)
    extractions = []

    def extract(target: Path) -> None:
        extractions.append(target)
        datasets._atomic_save(array, target / "labels.npy")

    stamp = {"labels": ["/source/file", 1, 2]}
    folder = datasets.cached_arrays("Tiny", stamp, extract)
    assert datasets.cached_arrays("Tiny", stamp, extract) == folder and len(extractions) == 1  # whole: reused
    path = folder / "labels.npy"
    path.write_bytes(path.read_bytes()[:-100])  # truncated (a disk that filled)
    datasets.cached_arrays("Tiny", stamp, extract)
    np.testing.assert_array_equal(np.load(path), array)
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0x10  # same size, one value wrong: np.load would not notice
    path.write_bytes(bytes(damaged))
    datasets.cached_arrays("Tiny", stamp, extract)
    np.testing.assert_array_equal(np.load(path), array)
    assert len(extractions) == 3
    (folder / "source.json").write_text("{not json")
    datasets.cached_arrays("Tiny", stamp, extract)
    assert len(extractions) == 4
