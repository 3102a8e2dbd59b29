"""A tiny ImageNet folder in the usual layout: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, real JPEG files.

Each class has its own colour (plus noise), so a few steps of training can tell
the classes apart; sizes vary and are not square, as ImageNet's are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZES = ((48, 36), (40, 56), (64, 48))  # (width, height)


def wnid(index: int) -> str:
    return f"n{1440764 + 1000 * index:08d}"


def class_index(name: str) -> int:
    return (int(name[1:]) - 1440764) // 1000


def write_imagenet(root: Path, classes: int = 30, train_per_class: int = 6, val_per_class: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "imagenet"
    colours = rng.integers(30, 226, (classes, 3))
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            target = folder / split / wnid(c)
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width, height = SIZES[(c + i) % len(SIZES)]
                noise = rng.integers(-30, 31, (height, width, 3))
                pixels = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
                name = f"{wnid(c)}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * count + i:08d}.JPEG"
                Image.fromarray(pixels).save(target / name, format="JPEG", quality=90)
    return folder
