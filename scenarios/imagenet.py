"""SplitImageNet (SupSup sec. 4.1, after BatchE): 100 tasks of 10 ImageNet classes, streamed from disk.

ImageNet does not fit in memory, so unlike the other streams this one reads
its images from disk as it goes: JPEG decoding, cropping and resizing run in
DataLoader worker processes, which hand uint8 tensors to the stream; the
stream moves them to the device and normalises them there.

Layout (the usual ImageFolder one, never downloaded)::

    <data dir>/imagenet/train/<class>/<image>.JPEG
    <data dir>/imagenet/val/<class>/<image>.JPEG

with the 50,000 validation images sorted into the same class folders as the
training ones. Classes are the training folders in sorted order; the task
split draws a permutation of them from the seed.

Every random choice (which images, which crop, which flip) is drawn in the
stream's process and sent with the image index, so a batch depends only on the
seed, never on the number of workers or on which worker decodes what.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from scenarios.datasets import DataMissingError, DatasetSpec, register_dataset
from scenarios.streams import Batch, EpochSampler, Segment, Stream, StreamPlan, derived_seed, register_stream

FOLDER_NAMES = ("imagenet", "ImageNet")
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
MEAN = (0.485, 0.456, 0.406)  # ImageNet's channel statistics in [0, 1]
STD = (0.229, 0.224, 0.225)
EVAL_RESIZE = 256 / 224  # resize the short side to size * 256/224, then take the central size x size
CROP_SCALE = (0.08, 1.0)  # random-resized-crop area and aspect ratio ranges (Szegedy et al. 2015)
CROP_RATIO = (3 / 4, 4 / 3)
LAYOUT = "ROOT/imagenet/train/<class>/*.JPEG and ROOT/imagenet/val/<class>/*.JPEG (val sorted into train's classes)"


def _missing(message: str, data_dir: Path | None) -> DataMissingError:
    where = f"ROOT={data_dir}" if data_dir else "no ROOT given (pass --data-dir or set $HARNESS_DATA_DIR)"
    return DataMissingError(f"dataset ImageNet: {message}; expected {LAYOUT}; {where}; ImageNet is never downloaded")


def _class_folders(split: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split) if entry.is_dir())


def locate_imagenet(data_dir: Path | None) -> Path:
    """The ImageNet folder under the data dir, its layout checked (class folders, train and val alike)."""
    if data_dir is None:
        raise _missing("no data folder given", data_dir)
    candidates = [data_dir / name for name in FOLDER_NAMES]
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        raise _missing(f"neither of {', '.join(str(c) for c in candidates)} exists", data_dir)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise _missing(f"{root / split} is missing", data_dir)
    train, val = _class_folders(root / "train"), _class_folders(root / "val")
    if not train:
        raise _missing(f"{root / 'train'} has no class folders", data_dir)
    if train != val:
        odd = sorted(set(train) ^ set(val))
        raise _missing(f"train and val have different class folders ({len(odd)} differ, e.g. {odd[0]!r})", data_dir)
    return root


@functools.lru_cache(maxsize=2)
def imagenet_classes(data_dir: Path | None) -> tuple[Path, tuple[str, ...]]:
    root = locate_imagenet(data_dir)
    return root, tuple(_class_folders(root / "train"))


def prepare_imagenet(data_dir: Path | None) -> Path:
    """The check run before any work starts; nothing is copied or cached (the images stay where they are)."""
    return imagenet_classes(data_dir)[0]


FAKE_SIZES = ((48, 36), (40, 56), (64, 48))  # (width, height) of the fake's images


def wnid(index: int) -> str:
    """The fake's class folder names, shaped like ImageNet's WordNet ids."""
    return f"n{1440764 + 1000 * index:08d}"


def class_index(name: str) -> int:
    return (int(name[1:]) - 1440764) // 1000


def write_fake_imagenet(root: Path, classes: int = 30, train_per_class: int = 6, val_per_class: int = 12) -> Path:
    """A tiny ImageNet folder in the usual layout, real JPEG files: each class has its own colour (plus noise), so
    a few steps of training can tell the classes apart; sizes vary and are not square, as ImageNet's are."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "imagenet"
    colours = rng.integers(30, 226, (classes, 3))
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            target = folder / split / wnid(c)
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width, height = FAKE_SIZES[(c + i) % len(FAKE_SIZES)]
                noise = rng.integers(-30, 31, (height, width, 3))
                pixels = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
                name = f"{wnid(c)}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * count + i:08d}.JPEG"
                Image.fromarray(pixels).save(target / name, format="JPEG", quality=90)
    return folder


register_dataset(
    DatasetSpec(
        name="ImageNet",
        locate=lambda data_dir, download: locate_imagenet(data_dir),
        prepare=prepare_imagenet,
        write_fake=write_fake_imagenet,
        downloadable=False,
    )
)


def list_images(folder: Path) -> list[str]:
    files = sorted(e.name for e in os.scandir(folder) if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataMissingError(f"dataset ImageNet: class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def random_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of random area (8% to 100%) and aspect ratio (3/4 to 4/3, log-uniform), as Inception's training
    crops; after 10 misses, the largest central box of an allowed ratio."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
    w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def central_crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The central size x size box after resizing the short side to size * 256/224, in original pixels."""
    side = min(width, height) * size / round(size * EVAL_RESIZE)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class ImageFiles(Dataset):
    """Images decoded to uint8 [3, size, size]; an item is ``(index, seed)``: the seed picks crop and flip."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: int, train: bool) -> None:
        self.paths = list(paths)
        self.labels = list(labels)
        self.size = size
        self.train = train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        from PIL import Image

        index, seed = key
        with Image.open(self.paths[index]) as image:
            if not self.train:
                resized = round(self.size * EVAL_RESIZE)
                image.draft("RGB", (resized, resized))  # JPEG: decode at a reduced scale when that suffices
            image = image.convert("RGB")
            if self.train:
                rng = np.random.default_rng(seed)
                box = random_crop_box(*image.size, rng)
                image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
                if rng.random() < 0.5:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                box = central_crop_box(*image.size, self.size)
                image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
            pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return pixels, self.labels[index]


class EpochKeys:
    """Batches of ``(index, seed)`` keys without end: the stream's shuffled epochs, a fresh seed per image."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        self.sampler = EpochSampler(torch.arange(size), generator)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            indices = self.sampler.next(self.batch_size)
            seeds = torch.randint(0, 2**31, (len(indices),), generator=self.sampler.generator)
            yield list(zip(indices.tolist(), seeds.tolist(), strict=True))


@dataclass(frozen=True)
class SplitImageNetConfig:
    classes_per_task: int = field(default=10, metadata={"min": 1})  # SupSup, BatchE: 10
    num_tasks: int | None = field(default=None, metadata={"min": 1})  # None: classes // classes_per_task (100)
    steps_per_task: int = field(default=1000, metadata={"min": 1})  # training batches per task
    image_size: int = field(default=224, metadata={"min": 8})  # side of the square crops the network sees
    augment: bool = True  # random resized crop and flip of training images; else the evaluation crop
    workers: int = field(default=4, metadata={"min": 0})  # decoding processes (0: decode in the stream's process)


@register_stream("split_imagenet")
class SplitImageNet(Stream):
    Config = SplitImageNetConfig
    datasets = ("ImageNet",)
    IMAGENET_CLASSES = 1000  # for plans made before the folder is read

    @classmethod
    def plan(cls, config: SplitImageNetConfig) -> StreamPlan:  # type: ignore[override]
        tasks = config.num_tasks or cls.IMAGENET_CLASSES // config.classes_per_task
        shape = (3, config.image_size, config.image_size)
        return StreamPlan(shape, tasks, tasks * config.steps_per_task, 50 * config.classes_per_task)

    def __init__(self, config: object, *, seed: int, device: torch.device, data_dir: Path | None) -> None:
        super().__init__(config, seed=seed, device=device, data_dir=data_dir)
        cfg: SplitImageNetConfig = config  # type: ignore[assignment]
        self.root, classes = imagenet_classes(data_dir)
        count = cfg.num_tasks or len(classes) // cfg.classes_per_task
        if count * cfg.classes_per_task > len(classes) or count == 0:
            raise ValueError(
                f"split_imagenet: {count or 1} tasks of {cfg.classes_per_task} classes need "
                f"{max(count, 1) * cfg.classes_per_task} classes; {self.root} has {len(classes)}"
            )
        order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(derived_seed(seed, "class order")))
        size = cfg.classes_per_task
        self.task_classes = [tuple(classes[i] for i in order[t * size : (t + 1) * size]) for t in range(count)]
        self.num_tasks = count
        self.classes_per_task = size
        self.input_shape = (3, cfg.image_size, cfg.image_size)
        self.mean = torch.tensor(MEAN, device=device)[:, None, None] * 255
        self.std = torch.tensor(STD, device=device)[:, None, None] * 255
        self._files: dict[tuple[int, str], tuple[list[str], list[int]]] = {}
        self._train: tuple[int, int, Iterator] | None = None  # (task, batch size, batches) of the running segment
        self._replay_rng = np.random.default_rng(derived_seed(seed, "replay"))
        self._consumed = 0  # batches of the running segment handed out
        self._resume: tuple[int, int, int] | None = None  # (task, batch size, batches) to skip, after a restore

    def sampling_state(self) -> dict[str, object]:
        """The replay draws and how far the running segment's batches have gone: the decoding workers read
        ahead, so their position is not the sampler's, and a restore skips that many batches of keys."""
        running = None if self._train is None else (*self._train[:2], self._consumed)
        return {"replay": self._replay_rng.bit_generator.state, "train": running}

    def restore_sampling_state(self, state: dict[str, object]) -> None:
        self._replay_rng.bit_generator.state = state["replay"]
        self._train = None
        self._resume = state["train"]  # type: ignore[assignment]

    def segments(self) -> list[Segment]:
        steps = self.config.steps_per_task  # type: ignore[attr-defined]
        return [Segment(index=t, task=t, steps=steps) for t in range(self.num_tasks)]

    def files(self, task: int, split: str) -> tuple[list[str], list[int]]:
        """Paths and task-local labels of a task's images; only its own class folders are listed."""
        if (task, split) not in self._files:
            paths, labels = [], []
            for label, name in enumerate(self.task_classes[task]):
                folder = self.root / split / name
                names = list_images(folder)
                paths += [str(folder / n) for n in names]
                labels += [label] * len(names)
            if split == "val":  # a fixed mixed order, so that the first ``limit`` test images cover every class
                order = np.random.default_rng(derived_seed(self.seed, f"test order {task}")).permutation(len(paths))
                paths, labels = [paths[i] for i in order], [labels[i] for i in order]
            self._files[task, split] = (paths, labels)
        return self._files[task, split]

    def _dataset(self, task: int, split: str, train: bool) -> ImageFiles:
        paths, labels = self.files(task, split)
        return ImageFiles(paths, labels, self.config.image_size, train)  # type: ignore[attr-defined]

    def _loader(self, dataset: ImageFiles, batches: object, persistent: bool = False) -> DataLoader:
        workers = min(self.config.workers, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
        return DataLoader(
            dataset,
            batch_sampler=batches,  # type: ignore[arg-type]
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=persistent and workers > 0,
        )

    def _to_device(self, batch: tuple[Tensor, Tensor]) -> Batch:
        images, labels = batch
        x = images.to(self.device, non_blocking=True).float()
        return (x - self.mean) / self.std, labels.to(self.device, non_blocking=True)

    def train_batch(self, segment: Segment, step: int, batch_size: int) -> Batch:
        if self._train is None or self._train[:2] != (segment.task, batch_size):
            self._train = None  # the previous segment's workers exit before the next ones start
            augment = self.config.augment  # type: ignore[attr-defined]
            dataset = self._dataset(segment.task, "train", augment)
            generator = torch.Generator().manual_seed(derived_seed(self.seed, f"data order {segment.task}"))
            keys = EpochKeys(len(dataset), batch_size, generator)
            self._consumed = 0
            if self._resume is not None and self._resume[:2] == (segment.task, batch_size):
                skipped = iter(keys)
                for _ in range(self._resume[2]):
                    next(skipped)  # keys only: nothing decoded
                self._consumed = self._resume[2]
            self._resume = None
            self._train = (segment.task, batch_size, iter(self._loader(dataset, keys, persistent=True)))
        self._consumed += 1
        return self._to_device(next(self._train[2]))

    def sample_train(self, task: int, n: int) -> Batch:
        dataset = self._dataset(task, "train", self.config.augment)  # type: ignore[attr-defined]
        indices = self._replay_rng.integers(0, len(dataset), n)
        seeds = self._replay_rng.integers(0, 2**31, n)
        keys = [(int(i), int(s)) for i, s in zip(indices, seeds, strict=True)]
        chunks = [keys[start : start + 256] for start in range(0, n, 256)]
        parts = [self._to_device(batch) for batch in self._loader(dataset, chunks)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def test_batches(self, task: int, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        dataset = self._dataset(task, "val", False)
        count = len(dataset) if limit is None else min(limit, len(dataset))
        starts = range(0, count, batch_size)
        chunks = [[(i, 0) for i in range(start, min(start + batch_size, count))] for start in starts]
        for batch in self._loader(dataset, chunks):
            yield self._to_device(batch)
