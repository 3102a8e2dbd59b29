"""Every registered method in every scenario it supports, on a tiny synthetic stream.

Parametrised over the registry: a new method is tested here with no new test
code. The copyable template is registered too, so it stays a working method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import TASKS, TRAINING, run_synthetic

import methods._template  # noqa: F401  (registers "template")
from methods import METHODS
from results.metrics import accuracy_matrix

CASES = [(name, scenario) for name in METHODS.names() for scenario in sorted(METHODS.get(name).scenarios)]


def run_tiny(method: str, scenario: str) -> tuple[dict, pd.DataFrame]:
    return run_synthetic(method, scenario, training={**TRAINING, "probe_every": 20, "eval_batch_size": 64})


@pytest.mark.parametrize(("method", "scenario"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_method_learns_each_task_it_trains(method: str, scenario: str) -> None:
    run, evals = run_tiny(method, scenario)
    matrix = accuracy_matrix(evals)
    assert matrix.shape == (TASKS, TASKS)
    assert np.isnan(matrix[np.triu_indices(TASKS, 1)]).all(), "a task was evaluated before it was seen"
    assert np.isfinite(matrix[np.tril_indices(TASKS)]).all()
    chance = 1 / (2 * TASKS if scenario == "GNu" else 2)
    current = np.diag(matrix)
    assert (current > chance + 0.1).all() and current.mean() > chance + 0.25, f"did not learn its tasks: {current}"
    assert run["storage_bytes"] > 0 and run["samples"] == TASKS * 40 * 32
    assert (evals["metric"] == "probe_accuracy").sum() == TASKS * 40 // 20
    if scenario == "GNu":
        assert (evals["metric"] == "task_inference_accuracy").any()
    if scenario == "GG":
        assert not (evals["metric"] == "task_inference_accuracy").any()


@pytest.mark.parametrize("method", METHODS.names())
def test_method_declares_what_the_harness_needs(method: str) -> None:
    cls = METHODS.get(method)
    assert cls.name == method and cls.version and cls.scenarios
    cls.Config()  # every hyperparameter has a default


CONV_CASES = [
    (name, scenario)
    for name in METHODS.names()
    if "conv" in METHODS.get(name).backbones
    for scenario in sorted(METHODS.get(name).scenarios)
]


@pytest.mark.parametrize(("method", "scenario"), CONV_CASES, ids=[f"{m}-{s}" for m, s in CONV_CASES])
def test_method_learns_with_a_convolutional_backbone(method: str, scenario: str) -> None:
    backbone = {"name": "resnet18", "width": 4}
    _, evals = run_synthetic(
        method, scenario, steps=30, backbone=backbone, training={**TRAINING, "eval_batch_size": 64}
    )
    current = np.diag(accuracy_matrix(evals))
    chance = 1 / (2 * TASKS if scenario == "GNu" else 2)
    # a width-4 ResNet after 30 steps: the first task must be learned; later ones, where task inference from
    # one image of a barely trained conv net is the weak part, only above chance on average
    assert current[0] > chance + 0.25 and current.mean() > chance + 0.1, f"did not learn its tasks: {current}"
