"""Dry-run compute estimates: FLOPs of the backbones, and how estimates grow with the work a cell does."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backbones import PRESETS
from harness.estimate import estimate_cell, forward_flops
from harness.grid import make_cell


def test_forward_flops_are_the_known_multiply_adds_times_two() -> None:
    lenet = 784 * 300 + 300 * 100 + 100 * 10
    assert forward_flops(PRESETS["lenet_300_100"], (1, 28, 28), 10) == 2 * lenet
    assert forward_flops(PRESETS["resnet50"], (3, 224, 224), 1000) == pytest.approx(2 * 4.11e9, rel=0.01)


def cell(method: str = "standard", scenario: str = "GG", steps: int = 100, tasks: int = 10, **kwargs: object):  # noqa: ANN201
    return make_cell(
        method,
        "permuted_mnist",
        scenario,
        stream_settings={"num_tasks": tasks, "steps_per_task": steps},
        training={"probe_every": 0, "eval_samples": 1000},
        **kwargs,
    )


def test_estimates_grow_with_steps_network_and_hidden_tasks() -> None:
    base = estimate_cell(cell())
    assert base.train_samples == 10 * 100 * 128 and base.eval_samples == sum(range(1, 11)) * 1000
    assert estimate_cell(cell(steps=1000)).seconds > 5 * base.seconds
    assert estimate_cell(cell(backbone="fc_1024_1024")).seconds > 3 * base.seconds
    assert estimate_cell(cell("psp_complex")).seconds > 2 * base.seconds  # measured 0.3x the plain loop's speed
    few, many = estimate_cell(cell("supsup", "GNu", tasks=10)), estimate_cell(cell("supsup", "GNu", tasks=100))
    assert many.seconds > 10 * few.seconds  # One-Shot's cost grows with the masks stored


def test_a_method_states_its_own_speed_and_a_subclass_does_not_inherit_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from methods import METHODS
    from methods.base import register_method
    from methods.standard import Standard

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))

    @register_method("standard_variant")
    class StandardVariant(Standard):  # e.g. a new method built on the baseline: its speed is its own, unmeasured
        version = "1"

    measured, unmeasured = estimate_cell(cell()), estimate_cell(cell("standard_variant"))
    assert measured.speed_measured and not unmeasured.speed_measured
    assert unmeasured.seconds < measured.seconds  # at the plain loop's speed (standard's is 0.88 of it)


def test_the_dry_run_names_methods_whose_speed_is_not_measured(capsys: pytest.CaptureFixture[str]) -> None:
    import methods._template  # noqa: F401  (registers "template", which states no speed)
    from harness.cli import _dry_run

    _dry_run([cell(), cell("template")], None, Path("out"))
    assert "speed not measured, estimated at the plain loop's: template on fc" in capsys.readouterr().out
