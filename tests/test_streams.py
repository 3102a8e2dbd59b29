"""Every registered stream (parametrised over the registry) and the transforms of the MNIST family.

The copyable stream template is registered too, so it stays a working stream.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_runs import run_ok

import scenarios._template  # noqa: F401  (registers "template")
from harness.grid import make_cell
from results.metrics import accuracy_matrix
from scenarios import STREAMS
from scenarios.rotated import rotate, rotation_grid
from scenarios.streams import Stream

SMALL = {"num_tasks": 3, "steps_per_task": 5, "total_steps": 1000}


def build(name: str, data_dir: Path, seed: int = 0, **settings: object) -> Stream:
    cls = STREAMS.get(name)
    fields = cls.Config.__dataclass_fields__
    config = cls.Config(**{k: v for k, v in {**SMALL, **settings}.items() if k in fields})
    return cls(config, seed=seed, device=torch.device("cpu"), data_dir=data_dir)


@pytest.mark.parametrize("name", STREAMS.names())
def test_stream_batches_have_the_declared_shapes_and_labels(name: str, data_dir: Path) -> None:
    stream = build(name, data_dir)
    segments = stream.segments()
    assert [s.index for s in segments] == list(range(len(segments)))
    assert {s.task for s in segments} == set(range(stream.num_tasks))
    for segment in segments[:3]:
        x, y = stream.train_batch(segment, 0, 16)
        assert x.shape == (16, *stream.input_shape) and x.dtype == torch.float32
        # NCHW-contiguous: torch 2.13's oneDNN convolution backward corrupts the heap on some channels-last
        # inputs (a narrow ResNet-18 crashed CI on randomly cropped CIFAR batches)
        assert x.is_contiguous()
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < stream.classes_per_task
        test = list(stream.test_batches(segment.task, 50, limit=120))
        assert sum(len(b[1]) for b in test) == 120 and all(b[0].is_contiguous() for b in test)
        rx, ry = stream.sample_train(segment.task, 7)
        assert rx.shape == (7, *stream.input_shape) and int(ry.max()) < stream.classes_per_task
        assert rx.is_contiguous()


@pytest.mark.parametrize("name", STREAMS.names())
def test_stream_is_reproducible_from_its_seed(name: str, data_dir: Path) -> None:
    first = build(name, data_dir, seed=3)
    again = build(name, data_dir, seed=3)
    other = build(name, data_dir, seed=4)
    segment = first.segments()[-1]
    x1, _ = first.train_batch(segment, 0, 32)
    x2, _ = again.train_batch(segment, 0, 32)
    x3, _ = other.train_batch(segment, 0, 32)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)


def test_training_batches_cover_an_epoch_without_repeats(data_dir: Path) -> None:
    stream = build("split_mnist", data_dir, classes_per_task=2, num_tasks=1)
    pool = stream._sampler(0).pool
    seen = torch.cat([stream._sampler(0).next(100) for _ in range(len(pool) // 100)])
    assert len(seen.unique()) == len(seen)


def test_permuted_mnist_keeps_task_zero_plain_and_permutes_the_rest(data_dir: Path) -> None:
    stream = build("permuted_mnist", data_dir)
    images = torch.rand(4, 1, 28, 28)
    assert torch.equal(stream.transform(0, images), images)
    moved = stream.transform(1, images)
    assert not torch.equal(moved, images)
    assert torch.equal(moved.flatten(1).sort(1).values, images.flatten(1).sort(1).values)
    assert not torch.equal(stream.permutations[1], stream.permutations[2])


def test_split_mnist_tasks_are_consecutive_digit_pairs(data_dir: Path) -> None:
    stream = build("split_mnist", data_dir, num_tasks=None)
    assert stream.num_tasks == 5
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # MNIST's test set per digit
    for task in range(5):
        labels = torch.cat([y for _, y in stream.test_batches(task, 1000)])
        assert len(labels) == test_counts[2 * task] + test_counts[2 * task + 1]
        assert labels.unique().tolist() == [0, 1]


def test_rotation_is_counter_clockwise() -> None:
    image = torch.zeros(1, 1, 29, 29)
    image[0, 0, 14, 24] = 1.0  # right of the centre
    turned = rotate(image, rotation_grid(90, 29, 29, torch.device("cpu")))
    row, col = divmod(int(turned.flatten().argmax()), 29)
    assert (row, col) == (4, 14), "a quarter turn counter-clockwise moves the right edge to the top"


def test_rotated_mnist_turns_task_i_by_i_times_ten_degrees(data_dir: Path) -> None:
    stream = build("rotated_mnist", data_dir, num_tasks=36)
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 13:15, 20:26] = 1.0
    assert torch.equal(stream.transform(0, image), image)
    for task in (9, 13, 18):
        turned = stream.transform(task, image)
        ys, xs = torch.nonzero(turned[0, 0] > 0.3, as_tuple=True)
        angle = math.degrees(math.atan2(-(ys.float().mean() - 13.5), xs.float().mean() - 13.5))
        assert (angle - task * 10 + 180) % 360 - 180 == pytest.approx(0, abs=6)


def test_rotating_streams_turn_a_little_every_step_and_recur_every_cycle(data_dir: Path) -> None:
    stream = build("rotating_mnist", data_dir, total_steps=2500)
    assert stream.num_tasks == 10 and len(stream.segments()) == 25
    assert [s.task for s in stream.segments()[8:13]] == [8, 9, 0, 1, 2]
    assert stream.angle(0) == 0 and stream.angle(250) == pytest.approx(90) and stream.angle(1001) == pytest.approx(0.36)
    images = torch.zeros(1, 1, 28, 28)
    images[0, 0, 13:15, 20:26] = 1.0
    assert torch.equal(stream.transform(0, images), images)  # task 0 is the 0-degree test set
    turned = stream.transform(1, images)  # task 1 starts at step 100: 36 degrees
    ys, xs = torch.nonzero(turned[0, 0] > 0.3, as_tuple=True)
    assert math.degrees(math.atan2(-(ys.float().mean() - 13.5), xs.float().mean() - 13.5)) == pytest.approx(36, abs=6)


@pytest.mark.parametrize("name", STREAMS.names())
def test_plan_from_the_config_alone_matches_the_stream(name: str, data_dir: Path) -> None:
    stream = build(name, data_dir)
    plan = type(stream).plan(stream.config)
    segments = stream.segments()
    assert plan.input_shape == stream.input_shape and plan.num_tasks == stream.num_tasks
    assert plan.train_steps == sum(s.steps for s in segments) and plan.segment_count == len(segments)
    assert plan.test_per_task > 0


def test_the_stream_template_runs_a_cell(data_dir: Path) -> None:
    cell = make_cell(
        "standard",
        "template",
        "GG",
        stream_settings={"num_tasks": 2, "steps_per_task": 3},
        backbone={"name": "fc", "hidden": [32]},
        training={"lr": 1e-3, "batch_size": 16, "probe_every": 0, "eval_samples": 64},
    )
    run, evals = run_ok(cell, data_dir)
    matrix = accuracy_matrix(evals)
    assert matrix.shape == (2, 2) and np.isfinite(matrix[np.tril_indices(2)]).all() and run["samples"] == 2 * 3 * 16
    plain = build("template", data_dir, invert_odd_tasks=False)
    inverted = build("template", data_dir)
    for task, flipped in ((0, False), (1, True)):
        x_plain, x_inverted = next(plain.test_batches(task, 8))[0], next(inverted.test_batches(task, 8))[0]
        mean, std = plain.stats["MNIST"]
        expected = (1 - (x_plain * std + mean) - mean) / std if flipped else x_plain
        assert torch.allclose(x_inverted, expected, atol=1e-5)


def _draws(stream: Stream, steps: range) -> list[torch.Tensor]:
    """Training batches of the first two segments and a replay sample: what a resumed stream must repeat."""
    first, second = stream.segments()[:2]
    out = []
    for step in steps:
        out += list(stream.train_batch(first, step, 16))
    out += list(stream.train_batch(second, steps.stop, 16))
    return out + list(stream.sample_train(first.task, 8))


@pytest.mark.parametrize("name", STREAMS.names())
def test_stream_restored_from_its_sampling_state_draws_on_as_if_never_stopped(name: str, data_dir: Path) -> None:
    running = build(name, data_dir, augment=True)
    _draws(running, range(0, 4))  # part-way through an epoch, a second segment started, a replay drawn
    buffer = io.BytesIO()
    torch.save(running.sampling_state(), buffer)  # as a checkpoint holds it
    buffer.seek(0)
    restored = build(name, data_dir, augment=True)
    restored.restore_sampling_state(torch.load(buffer, weights_only=False))
    expected, resumed = _draws(running, range(4, 9)), _draws(restored, range(4, 9))
    assert all(torch.equal(a, b) for a, b in zip(expected, resumed, strict=True))
    fresh = _draws(build(name, data_dir, augment=True), range(4, 9))
    assert not all(torch.equal(a, b) for a, b in zip(expected, fresh, strict=True)), "the check cannot fail"
