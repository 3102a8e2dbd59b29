"""SVHN (Netzer et al. 2011) and SplitSVHN: its ten digits in pairs, 5 tasks, as SplitMNIST splits MNIST.

The files are torchvision's cropped digits, ``<root>/svhn/train_32x32.mat`` (73,257 images) and
``test_32x32.mat`` (26,032): MATLAB v5 files holding ``X`` (uint8 [32, 32, 3, N]: row, column, channel, image)
and ``y`` ([N, 1], labels 1..10, where 10 stands for the digit 0). They are read as ``torchvision.datasets.SVHN``
reads them (images [N, 3, 32, 32], label 10 as 0); a file with the real example count must match torchvision's
md5, smaller ones in the same format (the tests' fake) are read as they are. When missing they are downloaded
through torchvision into ``<cache>/torchvision/svhn`` (``SVHN(root=..., split=..., download=True)``).

``split_svhn``: tasks of ``classes_per_task`` consecutive digits (0/1, 2/3, ...), labels local to each task,
inputs standardised by SVHN's channel statistics; with ``augment``, training batches are randomly cropped
(padding 4) but never flipped, since digits are not mirror-symmetric.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
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
from scenarios.in_memory import PAD, ClassSplitConfig, ClassSplitStream
from scenarios.streams import register_stream

FOLDER = "svhn"
FILES = {  # split -> (file, torchvision's md5, examples in the real file)
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", 73_257),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", 26_032),
}
# Channel mean and std of the training images in [0, 1], the values commonly quoted for SVHN's training split.
MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN file as images [N, 3, 32, 32] uint8 and digits [N] int64 (its label 10 read as 0)."""
    from scipy.io import loadmat  # scipy's import is slow; only SVHN needs it, and only to decode

    try:
        mat = loadmat(path)
    except Exception as error:
        raise DataCorruptError(f"{path} is not a MATLAB file ({type(error).__name__}: {error})") from None
    images, labels = mat.get("X"), mat.get("y")
    if images is None or labels is None or images.dtype != np.uint8 or images.shape[:3] != (32, 32, 3):
        raise DataCorruptError(f"{path} lacks SVHN's 'X' (uint8, 32 x 32 x 3 x N) and 'y' entries")
    digits = labels.astype(np.int64).reshape(-1)
    if len(digits) != images.shape[3] or not np.isin(digits, np.arange(1, 11)).all():
        raise DataCorruptError(f"{path}: {len(digits)} labels for {images.shape[3]} images, or labels outside 1..10")
    digits[digits == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), digits


def _download(root: Path) -> None:
    from harness.torchvision_compat import import_torchvision

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        for split in FILES:
            import_torchvision().datasets.SVHN(root=str(root / FOLDER), split=split, download=True)


def locate_svhn(data_dir: Path | None, download: bool = True) -> Path:
    files = [file for file, _, _ in FILES.values()]
    return locate_files("SVHN", FOLDER, files, data_dir, _download if download else None)


def prepare_svhn(data_dir: Path | None) -> Path:
    """Decode both files into the cache once (again when they change); return the cache folder."""
    folder = locate_svhn(data_dir)

    def extract(target: Path) -> None:
        for split, (file, md5, real_count) in FILES.items():
            images, digits = read_svhn_mat(folder / file)
            if len(images) == real_count:
                check_md5(folder / file, md5, "SVHN")
            save_split(target, split, images, digits)

    return cached_arrays("SVHN", file_stamp({file: folder / file for file, _, _ in FILES.values()}), extract)


def write_fake_svhn(root: Path, per_class: int = 40, test_per_class: int = 64, seed: int = 0) -> Path:
    """A small SVHN folder in the real files' format: random images, each digit equally often, 10 for the 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", per_class), ("test", test_per_class)):
        digits = rng.permutation(np.repeat(np.arange(10), count))
        images = rng.integers(0, 256, (32, 32, 3, len(digits)), dtype=np.uint8)
        labels = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(folder / FILES[split][0], {"X": images, "y": labels})
    return folder


register_dataset(
    DatasetSpec(
        "SVHN", locate_svhn, prepare_svhn, write_fake_svhn, ImageInfo((3, 32, 32), 10, FILES["test"][2], MEAN, STD)
    )
)


@dataclass(frozen=True)
class SplitSvhnConfig(ClassSplitConfig):
    CLASSES = 10
    classes_per_task: int = field(default=2, metadata={"min": 1, "max": 10})  # 5 tasks of 2 digits
    augment: bool = False  # random crops (padding 4) of training batches, never flips


@register_stream("split_svhn")
class SplitSvhn(ClassSplitStream):
    Config = SplitSvhnConfig
    dataset = "SVHN"
    datasets = (dataset,)
    crop_padding, flip = PAD, False
