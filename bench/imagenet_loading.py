"""How fast split_imagenet delivers training batches from disk, for each number of decoding workers.

Times ``train_batch`` alone (no model): JPEG decoding, the random resized crop
and flip, the transfer and normalisation. A GPU training step of ResNet-50 at
batch 256 takes a fraction of a second, so this tells how many workers a
machine needs to keep its GPU fed. ``--fake-data`` writes 10 classes of
ImageNet-size JPEGs (500x375 and 375x500, about 110 KB each) for machines
without ImageNet; decoding cost depends on size and quality, not on content.

    python bench/imagenet_loading.py --data-dir DATA_ROOT [--workers 0,1,2,4] [--batches 20]
    python bench/imagenet_loading.py --fake-data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT  # noqa: F401  (puts the project on the path)

from scenarios.streams import STREAMS


def write_fake_imagenet(root: Path, classes: int = 10, per_class: int = 100) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 5)):
        for c in range(classes):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                size = (500, 375) if i % 2 else (375, 500)
                base = rng.integers(0, 256, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
                image = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
                noise = rng.integers(-20, 21, (size[1], size[0], 3))
                pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)


def images_per_second(data_dir: Path, workers: int, batches: int, batch_size: int, size: int) -> float:
    cls = STREAMS.get("split_imagenet")
    config = cls.Config(num_tasks=1, image_size=size, workers=workers)
    stream = cls(config, seed=0, device=torch.device("cpu"), data_dir=data_dir)
    segment = stream.segments()[0]
    stream.train_batch(segment, 0, batch_size)  # workers start and fill their queues
    start = time.perf_counter()
    for step in range(batches):
        stream.train_batch(segment, step + 1, batch_size)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--fake-data", action="store_true")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    if args.fake_data == (args.data_dir is not None):
        parser.error("give --data-dir or --fake-data")
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if args.fake_data:
            data_dir = Path(scratch)
            write_fake_imagenet(data_dir)
        print(f"| workers | images/s (batch {args.batch_size}, {args.image_size}x{args.image_size}) |")
        print("| --- | --- |")
        for workers in (int(w) for w in args.workers.split(",")):
            rate = images_per_second(data_dir, workers, args.batches, args.batch_size, args.image_size)
            print(f"| {workers} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
