"""The runner applies the scenario rules, restarts optimisers on request and records failures as results."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import harness.runner as runner
from harness.grid import make_cell
from harness.runner import WorkerSettings, run_cell
from methods import METHODS
from methods.base import Prediction, ReplaySampler
from methods.si import SI
from methods.standard import Standard, StandardConfig

SETTINGS = WorkerSettings(data_dir=None, device="cpu", threads=1)
TASKS, STEPS = 3, 6


class Spy(Standard):
    """A standard method that writes down what every hook is told."""

    def __init__(self, config: object) -> None:
        super().__init__(config)
        self.calls: list[tuple[str, object]] = []
        self.targets: list[tuple[int | None, int, int]] = []

    def begin_segment(self, task: int | None, step: int) -> list[nn.Parameter] | None:
        self.calls.append(("begin", task))
        if task != 1:
            return None
        self.trunk_at_task_1 = self.net[0].layers[1].weight.detach().clone()
        self.head_at_task_1 = self.net[-1].weight.detach().clone()
        return [self.net[-1].weight]  # from task 1 on, train the head's weight only

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        self.calls.append(("loss", task))
        self.targets.append((task, int(y.min()), int(y.max())))
        return super().loss(x, y, task)

    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        self.calls.append(("end", task))
        assert replay is not None
        x, y = replay(5)
        self.replayed = (x.shape, int(y.max()))

    def predict(self, x: Tensor, task: int | None) -> Prediction:
        self.calls.append(("predict", task))
        return super().predict(x, task)


def run_spy(scenario: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Spy, runner.CellResult]:
    spy = Spy(StandardConfig())
    monkeypatch.setattr(runner, "build_method", lambda cell: spy)
    cell = make_cell(
        "standard",
        "synthetic",
        scenario,
        stream_settings={"num_tasks": TASKS, "steps_per_task": STEPS, "classes_per_task": 2},
        backbone={"name": "fc", "hidden": [8]},
        training={"batch_size": 16, "probe_every": 0},
    )
    result = run_cell(cell, SETTINGS)
    assert result.run["status"] == "ok", result.run["traceback"]
    return spy, result


def told(spy: Spy, hook: str) -> set[object]:
    return {task for name, task in spy.calls if name == hook}


@pytest.mark.parametrize("scenario", ["GG", "GNs", "GNu"])
def test_task_given_in_training(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _ = run_spy(scenario, monkeypatch)
    assert told(spy, "loss") == {0, 1, 2}
    assert [t for name, t in spy.calls if name == "begin"] == [0, 1, 2]
    assert [t for name, t in spy.calls if name == "end"] == [0, 1, 2]
    assert told(spy, "predict") == ({0, 1, 2} if scenario == "GG" else {None})


def test_nns_hides_task_and_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _ = run_spy("NNs", monkeypatch)
    assert told(spy, "loss") == {None} and told(spy, "predict") == {None}
    assert [c for c in spy.calls if c[0] in ("begin", "end")] == [("begin", None)]


def test_unshared_labels_are_task_and_class(monkeypatch: pytest.MonkeyPatch) -> None:
    spy, result = run_spy("GNu", monkeypatch)
    for task, low, high in spy.targets:
        assert 2 * task <= low and high < 2 * task + 2
    assert spy.net[-1].out_features == 2 * TASKS
    assert spy.replayed == (torch.Size([5, 1, 8, 8]), 2 * TASKS - 1)
    evals = pd.DataFrame(result.evals)
    assert set(evals[evals.metric == "task_inference_accuracy"].eval_task) == {0, 1, 2}


def test_shared_labels_are_local(monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _ = run_spy("GNs", monkeypatch)
    assert all(low >= 0 and high <= 1 for _, low, high in spy.targets)
    assert spy.net[-1].out_features == 2


def test_returned_parameters_restart_the_optimiser(monkeypatch: pytest.MonkeyPatch) -> None:
    spy, _ = run_spy("GG", monkeypatch)
    # the spy asked to train only the head's weight from task 1 on: the trunk keeps what task 0 left
    assert torch.equal(spy.trunk_at_task_1, spy.net[0].layers[1].weight.detach())
    assert not torch.equal(spy.head_at_task_1, spy.net[-1].weight.detach())


def test_a_failing_method_is_recorded_with_its_error_and_earlier_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = make_cell(
        "standard",
        "synthetic",
        "GG",
        stream_settings={"num_tasks": 2, "steps_per_task": 5},
        backbone={"name": "fc", "hidden": [8]},
        training={"optimizer": "sgd", "lr": 1e30, "probe_every": 0},
    )
    result = run_cell(cell, SETTINGS)
    assert result.run["status"] == "failed"
    assert result.run["error"].startswith("FloatingPointError: the training loss became")
    assert "Traceback" in result.run["traceback"]


def test_wrong_logit_shape_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Narrow(Standard):
        def predict(self, x: Tensor, task: int | None) -> Prediction:
            return Prediction(super().predict(x, task).logits[:, :1])

    monkeypatch.setattr(runner, "build_method", lambda cell: Narrow(StandardConfig()))
    cell = make_cell("standard", "synthetic", "GNs", stream_settings={"num_tasks": 1, "steps_per_task": 2})
    result = run_cell(cell, SETTINGS)
    assert result.run["status"] == "failed" and "logits of shape" in result.run["error"]


def test_si_keeps_copies_of_the_weights_not_views() -> None:
    si = SI(SI.Config(c=1.0))
    holder: dict[str, SI] = {}

    def build(cell: object) -> SI:
        holder["si"] = si
        return si

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "build_method", build)
        cell = make_cell("si", "synthetic", "GG", stream_settings={"num_tasks": 2, "steps_per_task": 20})
        assert run_cell(cell, SETTINGS).run["status"] == "ok"
    for snapshots in (si.previous, si.anchor, si.task_start):
        for p, snapshot in zip(si.params, snapshots, strict=True):
            assert snapshot.data_ptr() != p.data_ptr()
    assert sum(float(o.abs().sum()) for o in si.omega) > 0, "a view-based snapshot would leave Omega at zero"


def test_learning_rate_warms_up_then_follows_a_cosine_within_every_segment() -> None:
    config = runner.TrainingConfig(lr_schedule="cosine", warmup_steps=2)
    factors = [runner.lr_factor(step, 10, config) for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))
    assert runner.lr_factor(5, 10, runner.TrainingConfig()) == 1.0


def test_a_scheduled_learning_rate_scales_every_group_from_its_own_base(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[float]] = []
    original = torch.optim.RMSprop.step

    def spy_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append([group["lr"] for group in self.param_groups])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.RMSprop, "step", spy_step)
    cell = make_cell(
        "batche",
        "synthetic",
        "GG",
        stream_settings={"num_tasks": 2, "steps_per_task": 4, "classes_per_task": 2},
        backbone={"name": "fc", "hidden": [8]},
        training={"batch_size": 16, "probe_every": 0, "lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 1},
    )
    result = run_cell(cell, SETTINGS)
    assert result.run["status"] == "ok", result.run["traceback"]
    factors = [runner.lr_factor(i, 4, runner.TrainingConfig(lr_schedule="cosine", warmup_steps=1)) for i in range(4)]
    assert len(seen) == 8
    for step, lrs in enumerate(seen):  # batche's factors train at their own factor_lr (1e-2), its heads at lr
        assert sorted({round(lr / factors[step % 4], 12) for lr in lrs}) == [1e-3, 1e-2], (step, lrs)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_weight_decay_pulls_parameters_towards_zero_in_every_optimiser(optimizer: str, weight_decay: float) -> None:
    from harness.runner import TrainingConfig, make_optimizer

    weight = torch.nn.Parameter(torch.ones(3))
    step = make_optimizer([weight], TrainingConfig(optimizer=optimizer, lr=0.01, weight_decay=weight_decay))
    (weight * 0).sum().backward()  # no gradient from the loss: only the decay moves the weights
    step.step()
    assert bool((weight < 1).all()) == (weight_decay > 0)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not n.startswith("avalanche:")])  # optional extra
def test_weight_decay_is_refused_where_it_would_erode_finished_tasks(name: str) -> None:
    from harness.config import ConfigError

    cls = METHODS.get(name)
    scenario = sorted(cls.scenarios)[0]
    stream = "split_mnist" if name == "hopsupsup" else "permuted_mnist"

    def cell() -> object:
        return make_cell(
            name, stream, scenario, backbone={"name": "fc", "hidden": [8]}, training={"weight_decay": 1e-4}
        )

    if cls.takes_weight_decay:
        cell()
    else:
        with pytest.raises(ConfigError, match=f"method {name} does not take training weight_decay"):
            cell()
