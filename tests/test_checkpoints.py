"""Mid-cell checkpoints: every registered method, stopped at a checkpoint and resumed, ends bit for bit as if it
had run through; damaged checkpoints are never taken up; the driver resumes a killed run and tidies up after.

Parametrised over the method registry, so a new method is tested with no new test code. Streams are checked
the same way in ``test_streams.py``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from synthetic_runs import TRAINING

import methods._template  # noqa: F401  (registers "template")
from harness import runner
from harness.cells import Cell
from harness.checkpoint import checkpoint_path, partial_path
from harness.grid import make_cell
from harness.runner import CellResult, WorkerSettings, run_cell
from methods import METHODS
from results.load import load_tables
from results.text import unfinished_cells

CASES = [(name, scenario) for name in METHODS.names() for scenario in sorted(METHODS.get(name).scenarios)]
STEPS = 6  # per task, 3 tasks: five chances to checkpoint inside a segment and one after it


class Stopped(BaseException):
    """Stands for the kill: raised right after the n-th checkpoint was written (not an Exception, which the
    runner would record as the cell's failure)."""


def tiny_cell(method: str, scenario: str) -> Cell:
    return make_cell(
        method,
        "synthetic",
        scenario,
        stream_settings={"num_tasks": 3, "steps_per_task": STEPS},
        backbone={"name": "fc", "hidden": [8]},
        training={**TRAINING, "probe_every": 4},
    )


def run_until_checkpoint(cell: Cell, out: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run with a checkpoint at every chance and stop after the ``count``-th; False if the cell ended first."""
    save = runner.Loop.checkpoint
    saved = []

    def save_then_stop(loop: runner.Loop, position: object) -> None:
        save(loop, position)
        saved.append(position)
        if len(saved) == count:
            raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(runner.Loop, "checkpoint", save_then_stop)
        try:
            result = run_cell(cell, WorkerSettings(None, "cpu", 1, out=str(out), checkpoint_every_s=0))
        except Stopped:
            return True
    assert result.run["status"] == "ok", result.run["traceback"]
    return False


def resume(cell: Cell, out: Path) -> CellResult:
    result = run_cell(cell, WorkerSettings(None, "cpu", 1, out=str(out), checkpoint_every_s=math.inf))
    assert result.run["status"] == "ok", result.run["traceback"]
    return result


@pytest.mark.parametrize(("method", "scenario"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_a_cell_resumed_from_a_checkpoint_ends_as_if_never_stopped(
    method: str, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = tiny_cell(method, scenario)
    through = run_cell(cell, WorkerSettings(None, "cpu", 1))
    assert through.run["status"] == "ok", through.run["traceback"]
    own_loop = METHODS.get(method).runs_own_loop  # checkpoints only between its segments
    # mid-way through the first segment, between two segments, mid-way through the second
    stops = (1, 2) if own_loop else (1, STEPS, STEPS + 3)
    for stop in stops:
        out = tmp_path / f"stop{stop}"
        assert run_until_checkpoint(cell, out, stop, monkeypatch), f"the cell ended before checkpoint {stop}"
        resumed = resume(cell, out)
        assert resumed.run["resumes"] == 1
        assert pd.DataFrame(resumed.evals).equals(pd.DataFrame(through.evals)), f"differs after stop {stop}"
        for key in ("steps", "samples", "storage_bytes", "storage_parts"):
            assert resumed.run[key] == through.run[key], key


def test_a_damaged_checkpoint_is_not_taken_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell = tiny_cell("ewc", "GNu")
    through = run_cell(cell, WorkerSettings(None, "cpu", 1))
    assert run_until_checkpoint(cell, tmp_path, 8, monkeypatch)
    path = checkpoint_path(tmp_path, cell.cell_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    started_over = resume(cell, tmp_path)
    assert started_over.run["resumes"] == 0 and not path.exists()
    assert pd.DataFrame(started_over.evals).equals(pd.DataFrame(through.evals))


def test_another_cells_checkpoint_is_not_taken_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell, other = tiny_cell("standard", "GNu"), tiny_cell("si", "GNu")
    assert run_until_checkpoint(other, tmp_path, 3, monkeypatch)
    checkpoint_path(tmp_path, other.cell_id).rename(checkpoint_path(tmp_path, cell.cell_id))
    assert resume(cell, tmp_path).run["resumes"] == 0


def test_partial_results_are_the_rows_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell = tiny_cell("standard", "GNu")
    through = pd.DataFrame(run_cell(cell, WorkerSettings(None, "cpu", 1)).evals)
    assert run_until_checkpoint(cell, tmp_path, STEPS + 3, monkeypatch)  # 3 steps into the second task
    partial = pd.read_parquet(partial_path(tmp_path, cell.cell_id))
    assert 0 < len(partial) < len(through)
    assert partial.equals(through.iloc[: len(partial)])  # the same rows as the finished cell starts with
    assert partial["step"].max() <= STEPS + 3


GRID = """\
name: resumable
experiments:
  - methods: [ewc]
    streams: [{name: synthetic, num_tasks: 4, steps_per_task: 3000, train_per_task: 512}]
    scenarios: [GNu]
    backbone: {name: fc, hidden: [64]}
    training: {lr: 1.0e-3, batch_size: 32}
"""


def test_a_killed_run_resumes_its_cell_from_the_checkpoint_and_tidies_up(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out, clean = tmp_path / "out", tmp_path / "clean"
    common = ["run", "--grid", str(grid), "--executor", "inline"]
    subprocess.run([sys.executable, "-m", "harness.cli", *common, "--out", str(clean)], check=True, capture_output=True)
    killed = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *common, "--out", str(out), "--checkpoint-every", "1"],
        stderr=subprocess.DEVNULL,
    )
    partial = out / "partial"
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and any(partial.glob("*.parquet"))) and time.monotonic() < deadline:
        assert killed.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.2)
    time.sleep(1.5)  # a checkpoint or two later
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (out / "runs").is_dir() or not any((out / "runs").glob("*.parquet"))
    listed = unfinished_cells(load_tables(out))
    assert len(listed) == 1 and "partial results to step" in listed[0].progress, listed
    resumed = subprocess.run(
        [sys.executable, "-m", "harness.cli", *common, "--out", str(out)], capture_output=True, text=True, check=True
    )
    assert "1 of 1 cells to run resume from their checkpoints" in resumed.stderr
    runs = pd.read_parquet(out / "runs")
    assert runs["resumes"].tolist() == [1] and runs["status"].tolist() == ["ok"]
    columns = ["step", "segment", "tasks_seen", "eval_task", "metric", "value", "n"]
    assert pd.read_parquet(out / "evals")[columns].equals(pd.read_parquet(clean / "evals")[columns])
    assert not any((out / "checkpoints").iterdir()) and not any(partial.iterdir())


def test_a_ray_worker_killed_mid_cell_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    import threading

    from test_scheduler import ray_cell_processes

    from harness.grid import expand_grid
    from harness.scheduler import RunOptions, run_grid

    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    cells = expand_grid(str(grid))
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_the_worker_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 300  # Ray's workers run at nice 15: on a busy machine they start late
        while time.monotonic() < deadline and not killed:
            running = ray_cell_processes()
            if running and (out / "partial").is_dir() and any((out / "partial").glob("*.parquet")):
                time.sleep(1.0)
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_after_a_checkpoint, daemon=True)
    killer.start()
    options = RunOptions(out=out, executor="ray", checkpoint_every_s=0.5, progress=lambda _: None)
    summary = run_grid(cells, options)
    killer.join(timeout=5)
    assert killed, "the worker was not caught after a checkpoint"
    assert (summary.done, summary.failed) == (1, 0)
    runs = pd.read_parquet(out / "runs")
    assert runs["resumes"].tolist() == [1] and runs["pid"].tolist() != killed
    clean = run_cell(cells[0], WorkerSettings(None, "cpu", 1))
    assert pd.read_parquet(out / "evals").equals(pd.DataFrame(clean.evals))


def test_evaluations_reach_the_partial_file_between_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PARTIAL_EVERY_S", 0.0)
    cell = tiny_cell("standard", "GNu")
    final = pd.DataFrame(resume(cell, tmp_path).evals)  # never checkpoints; the last partial write was after task 2
    partial = pd.read_parquet(partial_path(tmp_path, cell.cell_id))
    assert partial.equals(final.iloc[: len(partial)])
    accuracy = partial[partial["metric"] == "accuracy"]
    assert set(accuracy["segment"]) == {0, 1} and not checkpoint_path(tmp_path, cell.cell_id).exists()
