"""SplitImageNet from a tiny ImageNet-layout folder of real JPEGs, and the ResNet-50 it is trained with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.backbones import PRESETS, backbone_factory
from methods.base import TorchKit
from scenarios.datasets import DataMissingError, prepare_dataset
from scenarios.imagenet import MEAN, STD, central_crop_box, class_index, random_crop_box, wnid
from scenarios.streams import STREAMS


def build(data_dir: Path, seed: int = 0, **settings: object):  # noqa: ANN201
    cls = STREAMS.get("split_imagenet")
    config = cls.Config(**{"image_size": 32, "workers": 2, **settings})
    return cls(config, seed=seed, device=torch.device("cpu"), data_dir=data_dir)


def test_tasks_partition_the_classes_in_an_order_drawn_from_the_seed(data_dir: Path) -> None:
    stream = build(data_dir)
    classes = [c for task in stream.task_classes for c in task]
    assert stream.num_tasks == 3 and sorted(classes) == [wnid(i) for i in range(30)]
    assert classes != sorted(classes) and build(data_dir, seed=1).task_classes != stream.task_classes
    assert stream.input_shape == (3, 32, 32)


def test_test_images_decode_to_their_class_colour_with_the_right_label(data_dir: Path) -> None:
    colours = np.random.default_rng(0).integers(30, 226, (30, 3))  # as write_fake_imagenet draws them
    stream = build(data_dir)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    x, y = next(stream.test_batches(1, 120))
    assert sorted(set(y.tolist())) == list(range(10))
    pixels = ((x * std + mean) * 255).mean(dim=(2, 3))
    expected = torch.from_numpy(np.array([colours[class_index(stream.task_classes[1][label])] for label in y.tolist()]))
    assert (pixels - expected).abs().max() < 12


def test_batches_depend_on_the_seed_alone_not_on_the_worker_processes(data_dir: Path) -> None:
    segment = build(data_dir).segments()[2]
    in_process = build(data_dir, workers=0)
    with_workers = build(data_dir, workers=2)
    for step in range(3):  # crosses an epoch of the 60 training images
        a, b = in_process.train_batch(segment, step, 25), with_workers.train_batch(segment, step, 25)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    replay = build(data_dir, workers=0).sample_train(0, 300), build(data_dir, workers=2).sample_train(0, 300)
    assert torch.equal(replay[0][0], replay[1][0]) and replay[0][0].shape == (300, 3, 32, 32)


def test_training_crops_differ_per_step_and_evaluation_crops_do_not(data_dir: Path) -> None:
    stream = build(data_dir)
    segment = stream.segments()[0]
    first, second = stream.train_batch(segment, 0, 60)[0], stream.train_batch(segment, 1, 60)[0]
    assert not torch.equal(first.sort(dim=0).values, second.sort(dim=0).values)
    assert torch.equal(next(stream.test_batches(0, 50))[0], next(build(data_dir).test_batches(0, 50))[0])


@pytest.mark.parametrize(("width", "height"), [(500, 375), (375, 500), (64, 64), (1000, 100)])
def test_crop_boxes_stay_inside_the_image(width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_crop_box(width, height, rng)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
    left, top, right, bottom = central_crop_box(width, height, 224)
    assert right - left == pytest.approx(min(width, height) * 224 / 256)
    assert left + right == pytest.approx(width) and top + bottom == pytest.approx(height)


def test_a_missing_or_misshapen_folder_says_what_layout_is_expected_where(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as error:
        prepare_dataset("ImageNet", tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "imagenet/train/<class>" in message and "never downloaded" in message
    copy = tmp_path / "copy"
    shutil.copytree(data_dir / "imagenet", copy / "imagenet")
    shutil.rmtree(copy / "imagenet" / "val" / wnid(4))
    with pytest.raises(DataMissingError, match="train and val have different class folders"):
        prepare_dataset("ImageNet", copy)
    assert prepare_dataset("ImageNet", data_dir) == data_dir / "imagenet"


def test_too_few_classes_for_the_tasks_asked_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="4 tasks of 10 classes need 40 classes"):
        build(data_dir, num_tasks=4)


def test_resnet50_has_the_standard_number_of_weights() -> None:
    backbone = backbone_factory(PRESETS["resnet50"], (3, 224, 224))(TorchKit())
    weights = sum(p.numel() for p in backbone.trunk.parameters())
    assert weights + 2048 * 1000 + 1000 == 25_557_032  # torchvision's resnet50, its 1000-way head included
    assert backbone.trunk(torch.zeros(1, 3, 64, 64)).shape == (1, backbone.feature_dim) == (1, 2048)
