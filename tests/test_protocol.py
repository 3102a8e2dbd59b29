"""Protocol settings: inputs (scaling, padding), GNu's training-loss outputs, their validation, and the table in
results.protocol that the leaderboard reads them by."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.config import ConfigError
from harness.grid import make_cell
from harness.runner import TrainingConfig
from methods import METHODS
from methods.base import LabelSpace, TrainingOutputs
from results.protocol import PROTOCOL_SETTINGS, describe_protocol, protocol_of
from results.schema import DIAGNOSTIC_PREFIX, METRICS
from scenarios import STREAMS
from scenarios.permuted import PermutedConfig, PermutedStream

MNIST_FAMILY = [name for name in STREAMS.names() if "mnist" in name]


def permuted(data_dir: Path, **settings: object) -> PermutedStream:
    config = PermutedConfig(num_tasks=2, steps_per_task=1, **settings)  # type: ignore[arg-type]
    return STREAMS.get("permuted_mnist")(config, seed=0, device=torch.device("cpu"), data_dir=data_dir)


def test_the_leaderboards_defaults_are_the_configs_defaults() -> None:
    owners = {"stream_config": [STREAMS.get(n).Config for n in MNIST_FAMILY], "training": [TrainingConfig]}
    for setting in PROTOCOL_SETTINGS:
        holders = [c for c in owners[setting.column] if setting.name in {f.name for f in dataclasses.fields(c)}]
        assert holders, setting.name
        for config in holders:
            assert {f.name: f.default for f in dataclasses.fields(config)}[setting.name] == setting.default


@pytest.mark.parametrize("name", MNIST_FAMILY)
def test_every_mnist_stream_takes_the_input_protocol(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(STREAMS.get(name).Config)}
    assert {"input_scaling", "pad_to"} <= fields


def test_unit_inputs_are_pixels_over_255_and_padding_adds_a_zero_border(data_dir: Path) -> None:
    standard = permuted(data_dir, first_task_unpermuted=True)
    unit = permuted(data_dir, first_task_unpermuted=True, input_scaling="unit", pad_to=32)
    x_standard, y_standard = next(standard.test_batches(0, 8))
    x_unit, y_unit = next(unit.test_batches(0, 8))
    assert unit.input_shape == (1, 32, 32) and type(unit).plan(unit.config).input_shape == (1, 32, 32)
    assert torch.equal(y_standard, y_unit)
    inner = x_unit[:, :, 2:30, 2:30]
    assert torch.allclose((inner - 0.1307) / 0.3081, x_standard, atol=1e-5)
    assert x_unit.min() == 0 and x_unit.max() <= 1
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x_unit[:, :, border] == 0).all()


def test_standardise_mnist_scales_any_dataset_by_mnists_statistics(data_dir: Path) -> None:
    def first_batch(**settings: object) -> torch.Tensor:
        config = STREAMS.get("rotating_fashion_mnist").Config(
            total_steps=10, cycle_steps=10, context_every=10, **settings
        )
        stream = STREAMS.get("rotating_fashion_mnist")(config, seed=0, device=torch.device("cpu"), data_dir=data_dir)
        return next(stream.test_batches(0, 8))[0]

    unit, own, mnist = first_batch(input_scaling="unit"), first_batch(), first_batch(input_scaling="standardise_mnist")
    assert torch.allclose(own, (unit - 0.2860) / 0.3530, atol=1e-5)  # Fashion-MNIST's own statistics
    assert torch.allclose(mnist, (unit - 0.1307) / 0.3081, atol=1e-5)  # PSP's code: MNIST's, on Fashion-MNIST too


def test_a_permutation_over_padded_images_moves_the_border_too(data_dir: Path) -> None:
    stream = permuted(data_dir, first_task_unpermuted=False, input_scaling="unit", pad_to=32)
    assert stream.permutations.shape == (2, 1024)
    x, _ = next(stream.test_batches(0, 64))
    assert (x.flatten(1)[:, 30 * 32 :] != 0).any()  # the bottom border rows receive image pixels


def test_too_small_a_padding_is_refused() -> None:
    with pytest.raises(ConfigError, match="pad_to must be 0"):
        make_cell("standard", "permuted_mnist", "GNu", stream_settings={"pad_to": 20})


def test_training_outputs_keep_the_seen_or_current_tasks_classes() -> None:
    labels = LabelSpace(3, 2, shared=False)
    logits = torch.zeros(1, 6, requires_grad=True)
    seen, current, every = (TrainingOutputs(labels, rule) for rule in ("seen", "current", "all"))
    seen.restrict(logits, 0)
    current.restrict(logits, 0)
    restricted = seen.restrict(logits, 1)
    assert torch.isfinite(restricted[0]).tolist() == [True, True, True, True, False, False]
    assert torch.isfinite(current.restrict(logits, 1)[0]).tolist() == [False, False, True, True, False, False]
    assert torch.equal(every.restrict(logits, 1), logits)
    F.cross_entropy(restricted, torch.tensor([3])).backward()
    assert logits.grad is not None and logits.grad[0, 4:].abs().sum() == 0  # unseen classes get no gradient
    assert logits.grad[0, 0] == pytest.approx(0.25)  # softmax over the 4 seen classes only


def test_loss_outputs_other_than_all_need_gnu_and_a_method_that_implements_them() -> None:
    make_cell("ewc", "permuted_mnist", "GNu", training={"loss_outputs": "seen"})
    with pytest.raises(ConfigError, match="applies to GNu"):
        make_cell("ewc", "permuted_mnist", "GG", training={"loss_outputs": "seen"})
    unsupported = next(name for name in METHODS.names() if "seen" not in METHODS.get(name).loss_outputs)
    scenario = "GNu" if "GNu" in METHODS.get(unsupported).scenarios else "GG"
    with pytest.raises(ConfigError, match="does not support training loss_outputs|applies to GNu"):
        make_cell(unsupported, "permuted_mnist", scenario, training={"loss_outputs": "seen"})
    with pytest.raises(ConfigError, match="loss_outputs must be one of"):
        make_cell("ewc", "permuted_mnist", "GNu", training={"loss_outputs": "some"})


def test_a_rows_protocol_reads_from_its_json_columns_with_defaults_filled_in() -> None:
    cell = make_cell(
        "si",
        "permuted_mnist",
        "GNu",
        stream_settings={"input_scaling": "unit", "pad_to": 32, "first_task_unpermuted": False},
        training={"loss_outputs": "seen"},
    )
    protocol = protocol_of({"stream_config": cell.stream_config, "training": cell.training})
    assert protocol == {"input_scaling": "unit", "pad_to": 32, "first_task_unpermuted": False, "loss_outputs": "seen"}
    assert describe_protocol(protocol) == "unit inputs, padded to 32, first task permuted, loss over seen outputs"
    assert describe_protocol(protocol_of({"stream_config": "{}", "training": "{}"})) == "harness"


def test_diagnostics_live_in_a_namespace_no_metric_uses() -> None:
    assert not any(metric.startswith(DIAGNOSTIC_PREFIX) or ":" in metric for metric in METRICS)
