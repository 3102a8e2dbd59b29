"""Fused cells (harness/fusion.py): a fused cell ends as it would alone, faults and checkpoints stay per cell, and the
plan, the CLI and the estimator say what is fused.

Parametrised over the method registry: every method that declares itself fusable is trained fused and alone, in
every scenario it supports, with no new test code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import Tensor, nn

from harness import runner
from harness.cells import Cell
from harness.estimate import FUSED_SPEEDUP, fused_speedup, fusion_pays
from harness.fusion import FusedGroup, plan_fusion, run_group
from harness.grid import make_cell
from harness.runner import CellResult, WorkerSettings, run_cell
from methods import METHODS
from methods.base import BuildContext
from methods.standard import Standard, StandardConfig

FUSABLE = [
    (name, scenario)
    for name in METHODS.names()
    if METHODS.get(name).fusion_unavailable is None
    for scenario in sorted(METHODS.get(name).scenarios)
]
SEEDS = (0, 1, 2)
# A fused cell's rows equal its solo run's to float reassociation (measured: at most 2.4e-7 on these cells); the
# same rows of two seeds differ by 5e-3 or more, so a mix-up of the members (a permutation of seeds) fails this
EQUAL = 1e-5


def tiny_cell(method: str, scenario: str, seed: int, **training: object) -> Cell:
    return make_cell(
        method,
        "synthetic",
        scenario,
        stream_settings={"num_tasks": 3, "steps_per_task": 12},
        backbone={"name": "fc", "hidden": [16]},
        training={"lr": 1e-3, "batch_size": 16, "probe_every": 5, **training},
        seed=seed,
    )


def rows(result: CellResult) -> dict[tuple[int, int, str], float]:
    return {(r["step"], r["eval_task"], r["metric"]): r["value"] for r in result.evals}


def largest_difference(a: CellResult, b: CellResult) -> float:
    left, right = rows(a), rows(b)
    assert left.keys() == right.keys()
    return max(abs(left[key] - right[key]) for key in left)


SETTINGS = WorkerSettings(data_dir=None, device="cpu", threads=1)


@pytest.mark.parametrize(("method", "scenario"), FUSABLE, ids=[f"{m}-{s}" for m, s in FUSABLE])
def test_a_fused_cell_ends_as_it_would_alone(method: str, scenario: str) -> None:
    cells = [tiny_cell(method, scenario, seed) for seed in SEEDS]
    alone = {c.cell_id: run_cell(c, SETTINGS) for c in cells}
    group = FusedGroup(cells, SETTINGS)
    fused = {r.run["cell_id"]: r for r in group.run()}
    assert group.note == "", group.note  # it ran fused to the end
    for cell in cells:
        result = fused[cell.cell_id]
        assert result.run["status"] == "ok", result.run["traceback"]
        assert result.run["fused_cells"] == len(SEEDS)
        assert result.run["steps"] == alone[cell.cell_id].run["steps"]
        assert largest_difference(result, alone[cell.cell_id]) <= EQUAL
    first, second = (alone[c.cell_id] for c in cells[:2])
    losses = [{k: v for k, v in rows(r).items() if k[2] == "train_loss"} for r in (first, second)]
    assert max(abs(losses[0][k] - losses[1][k]) for k in losses[0]) > 100 * EQUAL  # seeds are told apart


@pytest.mark.parametrize(
    ("method", "setting", "values"), [("ewc", "ewc_lambda", (1.0, 100.0, 1e4)), ("si", "c", (0.1, 1.0, 10.0))]
)
def test_cells_that_differ_in_a_fusable_setting_fuse_and_end_as_alone(
    method: str, setting: str, values: tuple[float, ...]
) -> None:
    assert setting in METHODS.get(method).fusable_settings
    cells = [
        make_cell(
            method,
            "synthetic",
            "GNu",
            method_settings={setting: value},
            stream_settings={"num_tasks": 3, "steps_per_task": 12},
            backbone={"name": "fc", "hidden": [16]},
            training={"lr": 1e-2, "batch_size": 16, "probe_every": 5},
        )
        for value in values
    ]
    assert len(plan_fusion(cells, 8).groups) == 1
    group = FusedGroup(cells, SETTINGS)
    fused = {r.run["cell_id"]: r for r in group.run()}
    assert group.note == ""
    alone = [run_cell(c, SETTINGS) for c in cells]
    for cell, own in zip(cells, alone, strict=True):
        assert largest_difference(fused[cell.cell_id], own) <= EQUAL
    assert largest_difference(alone[0], alone[2]) > 100 * EQUAL  # the strengths change the rows


class NaNOnSeedOne(Standard):
    """Standard, whose loss turns NaN for the cell of seed 1 after its first task."""

    def build(self, context: BuildContext) -> nn.Module:
        self.poisoned = context.seed == 1
        self.calls = 0
        return super().build(context)

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        self.calls += 1
        loss = super().loss(x, y, task)
        return loss * float("nan") if self.poisoned and self.calls > 12 else loss


def test_a_nan_in_one_fused_cell_fails_that_cell_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [tiny_cell("standard", "GG", seed) for seed in SEEDS]
    alone = {c.cell_id: run_cell(c, SETTINGS) for c in cells}
    monkeypatch.setattr(runner, "build_method", lambda cell: NaNOnSeedOne(StandardConfig()))
    results = {r.run["cell_id"]: r for r in run_group(cells, SETTINGS)}
    poisoned = results[cells[1].cell_id]
    assert poisoned.run["status"] == "failed" and "FloatingPointError" in poisoned.run["error"]
    assert poisoned.evals, "the evaluations made before the NaN are kept"
    for cell in (cells[0], cells[2]):
        assert results[cell.cell_id].run["status"] == "ok"
        assert largest_difference(results[cell.cell_id], alone[cell.cell_id]) <= EQUAL


class HiddenShift(nn.Module):
    """Adds a per-seed offset kept in a plain dict, not a buffer: fusing it would give every cell seed 0's."""

    def __init__(self, seed: int, width: int) -> None:
        super().__init__()
        self.hidden = {"offset": Tensor([float(seed)]).expand(width).clone()}

    def forward(self, x: Tensor) -> Tensor:
        return x + self.hidden["offset"]


class StateOutsideTheModule(Standard):
    def build(self, context: BuildContext) -> nn.Module:
        net = super().build(context)
        self.net = nn.Sequential(HiddenShift(context.seed, context.input_shape[-1]), net)
        return self.net


def test_state_outside_the_module_is_caught_and_the_cells_go_on_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "build_method", lambda cell: StateOutsideTheModule(StandardConfig()))
    cells = [tiny_cell("standard", "GG", seed) for seed in SEEDS]
    alone = {c.cell_id: run_cell(c, SETTINGS) for c in cells}
    group = FusedGroup(cells, SETTINGS)
    fused = {r.run["cell_id"]: r for r in group.run()}
    assert "differs from its own" in group.note
    for cell in cells:
        assert fused[cell.cell_id].run["status"] == "ok"
        assert largest_difference(fused[cell.cell_id], alone[cell.cell_id]) == 0.0  # caught before any fused step


class Stopped(BaseException):
    """Stands for the kill after the n-th checkpoint (not an Exception, which would fail the cell)."""


@pytest.mark.parametrize("saves", [3, 7, 5], ids=["all-members-saved", "later", "some-members-saved"])
def test_a_fused_group_resumes_from_its_checkpoints(
    saves: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [tiny_cell("ewc", "GNu", seed) for seed in SEEDS]
    alone = {c.cell_id: run_cell(c, SETTINGS) for c in cells}
    save, saved = runner.Loop.checkpoint, []

    def save_then_stop(loop: runner.Loop, position: object) -> None:
        save(loop, position)
        saved.append(position)
        if len(saved) == saves:
            raise Stopped

    out = str(tmp_path)
    with monkeypatch.context() as patch, pytest.raises(Stopped):
        patch.setattr(runner.Loop, "checkpoint", save_then_stop)
        run_group(cells, WorkerSettings(None, "cpu", 1, out=out, checkpoint_every_s=0))
    resumed = {r.run["cell_id"]: r for r in run_group(cells, WorkerSettings(None, "cpu", 1, out=out))}
    for cell in cells:
        result = resumed[cell.cell_id]
        assert result.run["status"] == "ok", result.run["traceback"]
        assert largest_difference(result, alone[cell.cell_id]) <= EQUAL
    every_member_saved = saves % len(SEEDS) == 0
    assert {r.run["fused_cells"] for r in resumed.values()} == ({len(SEEDS)} if every_member_saved else {1})


def test_the_plan_groups_cells_that_differ_only_in_seed() -> None:
    ewc = [tiny_cell("ewc", "GG", seed) for seed in range(5)]
    other = [tiny_cell("ewc", "GG", seed, lr=1e-2) for seed in range(2)]
    supsup = [tiny_cell("supsup", "GG", seed) for seed in range(2)]
    plan = plan_fusion([*ewc, *other, *supsup], max_cells=4)
    assert (
        [[c.cell_id for c in g] for g in plan.groups]
        == [  # five cells of one key: two groups, balanced
            [c.cell_id for c in ewc[:3]],
            [c.cell_id for c in ewc[3:]],
            [c.cell_id for c in other],
            [supsup[0].cell_id],
            [supsup[1].cell_id],
        ]
    )
    assert set(plan.alone) == {c.cell_id for c in supsup} and "supsup" in plan.alone[supsup[0].cell_id]
    split = plan_fusion(ewc, max_cells=8, slots=2)  # one group of five would leave a slot idle
    assert sorted(len(g) for g in split.groups) == [2, 3]
    assert plan_fusion(ewc, max_cells=4, mode="off").groups == [[c] for c in ewc]
    auto = plan_fusion(ewc, max_cells=4, mode="auto", device="cpu")
    assert (len(auto.groups) < len(ewc)) == fusion_pays("cpu", "fc")


def test_the_estimated_speed_up_is_the_measured_one_between_measured_sizes() -> None:
    for kind, points in FUSED_SPEEDUP.items():
        assert fused_speedup(kind, 1) == 1.0
        for (k0, s0), (k1, s1) in zip(points, points[1:], strict=False):
            assert fused_speedup(kind, k0) == pytest.approx(s0) and fused_speedup(kind, k1) == pytest.approx(s1)
            between = fused_speedup(kind, (k0 + k1) / 2)
            assert min(s0, s1) <= between <= max(s0, s1)
        assert fused_speedup(kind, 10 * points[-1][0]) == points[-1][1]
    assert fusion_pays("cpu", "fc") == (fused_speedup("fc", 2) > 1) and not fusion_pays("cuda", "conv")
