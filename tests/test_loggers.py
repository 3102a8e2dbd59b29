"""Loggers get the same rows as Parquet: every registered logger runs through `--logger` and `harness export`;
TensorBoard's scalars are the evals table's numbers; W&B gets one offline run per cell; a logger that fails costs
no result; bad names and missing libraries are one line before any work; an outside package adds a logger."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.cli import main
from harness.loggers import LOGGERS, hyperparameters, scalars_by_step

GRID = """
name: logged
experiments:
  - tag: t
    methods: [standard, ewc]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 5}]
    scenarios: [GG]
    backbone: {name: fc, hidden: [8]}
    training: {probe_every: 2}
"""


def run_with_tensorboard(grid: Path, out: Path) -> None:
    args = ["run", "--grid", str(grid), "--out", str(out), "--executor", "inline", "--logger", "tensorboard"]
    assert main(args) == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished output folder of two cells, run with the TensorBoard logger."""
    root = tmp_path_factory.mktemp("logged")
    (root / "grid.yaml").write_text(GRID)
    out = root / "out"
    run_with_tensorboard(root / "grid.yaml", out)
    return out


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_are_the_evals_tables_numbers(finished: Path) -> None:
    runs, evals = pd.read_parquet(finished / "runs"), pd.read_parquet(finished / "evals")
    folders = sorted((finished / "tensorboard").iterdir())
    assert len(folders) == len(runs) == 2
    for folder in folders:
        cell_id = folder.name.rsplit("-", 1)[1]
        assert folder.name.startswith(runs.set_index("cell_id").loc[cell_id, "method"] + ".synthetic.GG.seed0-")
        scalars = event_scalars(folder)
        rows = evals[evals.cell_id == cell_id]
        accuracy = rows[rows.metric == "accuracy"].groupby("step").value.mean()
        assert [s for s, _ in scalars["accuracy/average"]] == list(accuracy.index)
        assert [v for _, v in scalars["accuracy/average"]] == pytest.approx(list(accuracy), abs=1e-6)
        first = rows[(rows.metric == "accuracy") & (rows.eval_task == 0)]
        assert [v for _, v in scalars["accuracy/task_0"]] == pytest.approx(list(first.value), abs=1e-6)
        probe = rows[rows.metric == "probe_accuracy"]
        assert [s for s, _ in scalars["probe/accuracy"]] == list(probe.step) and len(probe) >= 4
        assert {"train/loss", "storage_bytes", "final/accuracy"} <= set(scalars)


@pytest.mark.parametrize("name", LOGGERS.names())
def test_every_logger_exports_a_finished_folder(name: str, finished: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["export", name, str(finished), "--to", str(tmp_path)]) == 0
    assert "2 cells of" in capsys.readouterr().out
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert written, f"the {name} logger wrote nothing"


def test_wandb_gets_one_run_per_cell_with_its_config_and_every_step(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The W&B calls, seen through a stand-in module (the real one is run offline by the export test above)."""
    sessions: list[dict[str, Any]] = []

    class Session:
        def __init__(self, **kwargs: Any) -> None:
            self.record = {"init": kwargs, "logged": [], "summary": {}, "finished": False}
            self.summary = self.record["summary"]
            sessions.append(self.record)

        def log(self, values: dict, step: int) -> None:
            self.record["logged"].append((step, values))

        def finish(self) -> None:
            self.record["finished"] = True

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init, fake.Settings = (lambda **kwargs: Session(**kwargs)), (lambda **kwargs: kwargs)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["export", "wandb", str(finished), "--to", str(tmp_path)]) == 0
    runs, evals = pd.read_parquet(finished / "runs"), pd.read_parquet(finished / "evals")
    assert sorted(s["init"]["id"] for s in sessions) == sorted(runs.cell_id)
    for session in sessions:
        init, run = session["init"], runs.set_index("cell_id").loc[session["init"]["id"]]
        assert init["mode"] == "offline" and init["group"] == "logged" and init["dir"] == str(tmp_path)
        assert init["config"]["training.lr"] == pytest.approx(1e-4) and init["config"]["method"] == run["method"]
        steps = [step for step, _ in session["logged"]]
        assert steps == sorted(set(steps)) == sorted(set(evals[evals.cell_id == init["id"]].step))
        assert session["finished"] and session["summary"]["status"] == "ok" and "final/accuracy" in session["summary"]


def test_a_failing_logger_costs_no_result_and_is_switched_off(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    import harness.loggers as loggers

    calls: list[str] = []

    def broken(self: Any, run: dict, evals: list) -> None:
        calls.append(run["cell_id"])
        raise OSError("disk of the logger is full")

    monkeypatch.setattr(loggers.TensorBoardLogger, "log_cell", broken)
    out = tmp_path / "out"
    (tmp_path / "grid.yaml").write_text(GRID)
    run_with_tensorboard(tmp_path / "grid.yaml", out)
    assert len(pd.read_parquet(out / "runs")) == 2 and len(calls) == 1  # tried once, then off
    err = capsys.readouterr().err
    assert "logger tensorboard failed on cell" in err and "disk of the logger is full" in err
    assert "harness export tensorboard" in err


def test_an_unknown_logger_or_a_missing_library_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    import importlib.util

    (tmp_path / "grid.yaml").write_text(GRID)
    args = ["run", "--grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out"), "--executor", "inline"]
    assert main([*args, "--logger", "tensorbord"]) == 2
    assert "unknown logger 'tensorbord' (did you mean: tensorboard?)" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main([*args, "--logger", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "harness: error: --logger wandb needs the wandb package: pip install wandb"
    assert main(["export", "wandb", str(tmp_path)]) == 2
    assert not (tmp_path / "out").exists()


def test_an_outside_package_adds_a_logger_through_its_entry_point(
    outside_package: Callable, finished: Path, tmp_path: Path
) -> None:
    plugin = """
import json
from pathlib import Path
from harness.loggers import LOGGERS, LoggerEntry, scalars_by_step

class JsonLines:
    def __init__(self, out):
        self.path = Path(out) / "cells.jsonl"
    def log_cell(self, run, evals):
        with self.path.open("a") as f:
            f.write(json.dumps({"cell": run["cell_id"], "steps": list(scalars_by_step(evals))}) + "\\n")
    def close(self):
        pass

LOGGERS.register("jsonlines")(LoggerEntry(JsonLines))
"""
    outside_package(LOGGERS, "harness.loggers", "outside_logger", plugin)
    assert main(["export", "jsonlines", str(finished), "--to", str(tmp_path)]) == 0
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"steps": [' in line for line in lines)


def test_hyperparameters_are_flat_and_of_types_tensorboard_takes(finished: Path) -> None:
    run = pd.read_parquet(finished / "runs").to_dict("records")[0]
    flat = hyperparameters(run)
    batch_size = json.loads(run["training"])["batch_size"]
    assert flat["training.batch_size"] == batch_size and type(flat["training.batch_size"]) is int
    assert all(isinstance(v, str | int | float | bool) for v in flat.values())
    assert "backbone.hidden" in flat and flat["backbone.hidden"] == "[8]"


def test_scalars_of_a_hand_made_cell() -> None:
    rows = [
        {"step": 5, "eval_task": 0, "metric": "accuracy", "value": 0.5},
        {"step": 5, "eval_task": -1, "metric": "storage_bytes", "value": 100.0},
        {"step": 10, "eval_task": 0, "metric": "accuracy", "value": 0.4},
        {"step": 10, "eval_task": 1, "metric": "accuracy", "value": 0.8},
        {"step": 10, "eval_task": 1, "metric": "task_inference_accuracy", "value": 1.0},
        {"step": 10, "eval_task": 1, "metric": "diagnostic:mask_density", "value": 0.3},
        {"step": 10, "eval_task": 1, "metric": "probe_task_inference_accuracy", "value": 0.9},
    ]
    assert scalars_by_step(rows) == {
        5: {"accuracy/task_0": 0.5, "storage_bytes": 100.0, "accuracy/average": 0.5},
        10: {
            "accuracy/task_0": 0.4,
            "accuracy/task_1": 0.8,
            "task_inference/task_1": 1.0,
            "diagnostic/mask_density": 0.3,
            "probe/task_inference": 0.9,
            "accuracy/average": pytest.approx(0.6),
            "task_inference/average": 1.0,
        },
    }
