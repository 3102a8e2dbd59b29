"""Finding, checking, decoding and caching datasets; the dataset registry, parametrised over it (every dataset's
fake is found, checked and read in its real format); the scenarios modules' imports; the torchvision import on
CPU-only torch."""

from __future__ import annotations

import ast
import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import scenarios.mnist_data as datasets
from harness.registry import UnknownNameError
from harness.torchvision_compat import import_torchvision
from scenarios import DATASETS, STREAMS
from scenarios.datasets import DataCorruptError, DataMissingError, dataset_status, load_arrays, prepare_dataset
from scenarios.mnist_data import IDX_FILES, prepare_idx_dataset, read_idx

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


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


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of the test's own and no downloads."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_OFFLINE", "1")


@pytest.mark.parametrize("name", DATASETS.names())
@pytest.mark.usefixtures("offline")
def test_every_datasets_fake_is_found_checked_and_read_in_its_real_format(name: str, tmp_path: Path) -> None:
    dataset = DATASETS.get(name)
    folder = dataset.write_fake(tmp_path / "data")
    assert dataset_status(name, tmp_path / "data") == (True, str(folder))
    prepared = prepare_dataset(name, tmp_path / "data")
    if dataset.info is None:  # streamed from disk as it goes: only checked
        assert prepared == folder
        return
    arrays = load_arrays(name, tmp_path / "data")
    channels, height, width = dataset.info.shape
    for images, labels in ((arrays.train_images, arrays.train_labels), (arrays.test_images, arrays.test_labels)):
        assert images.dtype == np.uint8 and images.shape[-2:] == (height, width) and len(images) == len(labels)
        assert (images.shape[1] if images.ndim == 4 else 1) == channels
        assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(dataset.info.classes))
    assert len(dataset.info.mean) == len(dataset.info.std) == channels


@pytest.mark.parametrize("name", DATASETS.names())
@pytest.mark.usefixtures("offline")
def test_a_missing_dataset_says_so_and_is_never_mistaken_for_another(name: str, tmp_path: Path) -> None:
    present, advice = dataset_status(name, tmp_path / "empty")
    assert not present and advice.startswith("missing")
    with pytest.raises(DataMissingError, match=f"dataset {name}"):
        prepare_dataset(name, tmp_path / "empty")


def test_an_unknown_dataset_is_one_error_naming_the_known_ones() -> None:
    for lookup in (prepare_dataset, dataset_status):
        with pytest.raises(
            UnknownNameError, match=r"unknown dataset 'CIFAR1000' \(did you mean: CIFAR100.*known: .*MNIST"
        ):
            lookup("CIFAR1000", None)


@pytest.mark.parametrize("name", STREAMS.names())
def test_every_stream_reads_only_registered_datasets(name: str) -> None:
    assert all(dataset in DATASETS for dataset in STREAMS.get(name).datasets)


def scenarios_imports(path: Path) -> set[str]:
    """The scenarios modules a module imports anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("scenarios.") and (SCENARIOS / f"{name[10:]}.py").is_file()}


def test_the_scenarios_modules_import_each_other_without_a_cycle() -> None:
    graph = {f"scenarios.{p.stem}": scenarios_imports(p) for p in SCENARIOS.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module) :] + (module,))}"
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


@pytest.mark.slow
def test_each_scenarios_module_imports_alone_in_a_fresh_interpreter() -> None:
    for path in sorted(SCENARIOS.glob("*.py")):
        module = "scenarios" if path.stem == "__init__" else f"scenarios.{path.stem}"
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=SCENARIOS.parent, capture_output=True, text=True
        )
        assert done.returncode == 0, f"import {module}: {done.stderr.strip().splitlines()[-1:]}"


def test_svhn_reads_as_torchvisions_svhn_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same images, layout and digits (10 read as 0) as torchvision.datasets.SVHN, on the fake's files."""
    from scenarios.svhn import FILES, read_svhn_mat

    folder = DATASETS.get("SVHN").write_fake(tmp_path)
    svhn = import_torchvision().datasets.SVHN
    monkeypatch.setattr(svhn, "_check_integrity", lambda self: True)  # the fake is not torchvision's file
    for split, (file, _, _) in FILES.items():
        reference = svhn(str(folder), split=split)
        images, digits = read_svhn_mat(folder / file)
        assert np.array_equal(images, reference.data) and np.array_equal(digits, reference.labels)
        assert images.shape[1:] == (3, 32, 32) and set(digits.tolist()) == set(range(10))


@pytest.mark.usefixtures("offline")
def test_an_svhn_file_with_the_real_count_must_have_torchvisions_md5(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import scenarios.svhn as svhn

    svhn.write_fake_svhn(tmp_path, test_per_class=3)
    file, md5, _ = svhn.FILES["test"]
    monkeypatch.setitem(svhn.FILES, "test", (file, md5, 30))  # as if the fake's 30 images were the real count
    with pytest.raises(DataCorruptError, match=f"test_32x32.mat has md5 .*, torchvision's SVHN file has {md5}"):
        prepare_dataset("SVHN", tmp_path)


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
        datasets.atomic_save(array, target / "labels.npy")

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
