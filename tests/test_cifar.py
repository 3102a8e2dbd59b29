"""CIFAR pickles read into uint8 arrays, md5 checks for files that claim to be real, and the CIFAR streams."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from scenarios.cifar_data import CIFAR_FILES, prepare_cifar_dataset, read_cifar_pickle, write_cifar10
from scenarios.datasets import DataCorruptError, DataMissingError
from scenarios.in_memory import random_crop_and_flip
from scenarios.streams import STREAMS


def test_a_pickle_reads_as_channel_first_uint8_images(data_dir: Path) -> None:
    path = data_dir / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    images, labels = read_cifar_pickle(path, "labels")
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == raw[b"labels"]
    row = raw[b"data"][7]
    assert images[7, 0, 0, 5] == row[5] and images[7, 1, 2, 3] == row[1024 + 2 * 32 + 3]
    assert images[7, 2, 31, 31] == row[3071]


def test_a_file_with_the_real_count_must_have_torchvisions_md5(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    write_cifar10(tmp_path, test_count=10000)  # claims to be the real test batch
    with pytest.raises(DataCorruptError, match="40351d587109b95175f43aff81a1287e"):
        prepare_cifar_dataset("CIFAR10", tmp_path)


def test_missing_cifar_offline_says_what_to_put_where(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    with pytest.raises(DataMissingError) as error:
        prepare_cifar_dataset("CIFAR100", tmp_path / "nothing")
    message = str(error.value)
    assert "cifar-100-python" in message and "train, test" in message and "HARNESS_OFFLINE" in message


def test_a_pickle_that_is_not_cifar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataCorruptError, match="not CIFAR's"):
        read_cifar_pickle(path, "labels")
    assert CIFAR_FILES["CIFAR100"].label_key == "fine_labels"


def build(name: str, data_dir: Path, seed: int = 0, **settings: object):  # noqa: ANN201
    cls = STREAMS.get(name)
    return cls(cls.Config(**settings), seed=seed, device=torch.device("cpu"), data_dir=data_dir)


def test_split_cifar100_partitions_the_classes_in_an_order_drawn_from_the_seed(data_dir: Path) -> None:
    stream = build("split_cifar100", data_dir)
    classes = [c for part in stream.parts for c in part.classes]
    assert stream.num_tasks == 20 and sorted(classes) == list(range(100)) and classes != list(range(100))
    assert [p.classes for p in build("split_cifar100", data_dir, seed=1).parts] != [p.classes for p in stream.parts]
    x, y = next(stream.test_batches(3, 1000))
    raw_labels = stream.data["CIFAR100"][3][stream._pool(3, False)]
    assert sorted(set(raw_labels.tolist())) == sorted(stream.parts[3].classes)
    assert x.shape[1:] == (3, 32, 32) and sorted(set(y.tolist())) == [0, 1, 2, 3, 4]


def test_icifar_starts_with_cifar10_then_contiguous_tens_of_cifar100(data_dir: Path) -> None:
    stream = build("icifar", data_dir, num_tasks=3)
    assert [p.dataset for p in stream.parts] == ["CIFAR10", "CIFAR100", "CIFAR100"]
    assert stream.parts[2].classes == tuple(range(10, 20)) and stream.classes_per_task == 10


def test_random_crop_and_flip_take_a_window_of_the_padded_image() -> None:
    images = torch.rand(6, 3, 32, 32)
    out = random_crop_and_flip(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(6):
        windows = [
            w
            for dy in range(9)
            for dx in range(9)
            for w in (padded[i, :, dy : dy + 32, dx : dx + 32], padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1))
        ]
        assert any(torch.equal(out[i], w) for w in windows)
