"""Finding, checking, decoding and caching datasets; the torchvision import on CPU-only torch."""

from __future__ import annotations

import gzip
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
