"""Live progress: cells report where they are (inline and through Ray), the grid's ETA comes from the estimates
scaled by the speed seen so far (worked by hand here), a terminal gets a table redrawn in place and a pipe plain
lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.grid import expand_grid, make_cell
from harness.progress import CellProgress, GridCounts, ProgressBoard, ProgressSink, ProgressView
from harness.runner import WorkerSettings, run_cell
from harness.scheduler import RunOptions, run_grid

REPO = Path(__file__).resolve().parents[1]
GRID = """
name: watched
experiments:
  - tag: t
    methods: [standard]
    streams: [{{name: synthetic, num_tasks: 2, steps_per_task: {steps}}}]
    scenarios: [GG, GNs]
    backbone: {{name: fc, hidden: [16]}}
"""


def report(cell_id: str, step: int, steps: int, elapsed: float) -> CellProgress:
    return CellProgress(cell_id, "host", 0, 2, step, steps, 0.5, None, elapsed)


def test_the_grids_eta_is_the_estimates_left_at_the_speed_seen_so_far() -> None:
    view = ProgressView({"a": "A", "b": "B", "c": "C"}, {"a": 10.0, "b": 20.0, "c": 30.0}, slots=1)
    assert view.eta_seconds() == 60.0  # nothing has run: the estimates as they are
    view.cell_finished("a", 20.0)  # took twice its estimate
    view.update({"b": report("b", 50, 100, 20.0)})  # half done in 20 s: estimated 10 s for that half
    assert view.speed_ratio() == pytest.approx((20 + 20) / (10 + 10))
    assert view.eta_seconds() == pytest.approx(2.0 * (30 + 20 * 0.5))
    assert view.cell_eta(view.running[0]) == pytest.approx(20.0)
    view.update({"a": report("a", 1, 100, 1.0)})  # a late report of a finished cell changes nothing
    assert [r.cell_id for r in view.running] == ["b"]
    two_slots = ProgressView({"a": "A", "b": "B"}, {"a": 10.0, "b": 30.0}, slots=2)
    assert two_slots.eta_seconds() == 20.0
    line = view.counts_line(GridCounts(total=4, skipped=1, done=1, failed=0))
    assert line.startswith("[harness] 2/4 cells: 1 done, 0 failed, 1 skipped, 1 running, 1 waiting; elapsed 0m0")
    assert line.endswith("eta 1m20s")


def test_a_cell_reports_its_last_step_segment_loss_and_accuracy() -> None:
    board = ProgressBoard()
    cell = make_cell(
        "standard",
        "synthetic",
        "GG",
        stream_settings={"num_tasks": 3, "steps_per_task": 20},
        backbone={"name": "fc", "hidden": [16]},
        training={"probe_every": 0},
    )
    settings = WorkerSettings(data_dir=None, device="cpu", threads=1, progress=ProgressSink(board))
    result = run_cell(cell, settings)
    last = board.snapshot()[cell.cell_id]
    assert (last.segment, last.segments, last.step, last.steps) == (3, 3, 60, 60)
    final = [r["value"] for r in result.evals if r["metric"] == "accuracy" and r["segment"] == 2]
    assert last.accuracy == pytest.approx(sum(final) / len(final)) and last.loss is not None
    assert last.node == socket.gethostname() and 0 < last.elapsed_s <= result.run["wall_seconds"] + 1e-6


def test_a_sink_whose_board_fails_never_fails_the_cell() -> None:
    class Broken:
        def report(self, update: CellProgress) -> None:
            raise ConnectionError("driver gone")

    ProgressSink(Broken()).send(report("a", 1, 2, 0.1))  # no exception


def test_ray_workers_report_to_the_driver(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    # long enough (a few seconds, more on a busy machine) that the driver, asking every 2 s, finds it running
    path.write_text(GRID.format(steps=4000).replace("scenarios: [GG, GNs]", "scenarios: [GG]"))
    lines: list[str] = []
    summary = run_grid(expand_grid(str(path)), RunOptions(out=tmp_path / "out", progress=lines.append, live=False))
    assert summary.done == 1
    cell_lines = [line for line in lines if line.startswith("[harness]   cell standard/synthetic/GG/seed0")]
    assert cell_lines, lines
    assert f"node {socket.gethostname()}:" in cell_lines[0] and "/8,000" in cell_lines[0]


def test_a_terminal_gets_a_table_and_a_pipe_gets_lines(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    # long enough (seconds) that the live table is redrawn at least once on a fast, quiet machine
    path.write_text(GRID.format(steps=3000))
    command = [sys.executable, "-m", "harness.cli", "run", "--grid", str(path), "--executor", "inline"]
    env = {**os.environ, "COLUMNS": "140", "TERM": "xterm"}
    typescript = tmp_path / "typescript"
    terminal = subprocess.run(
        ["script", "-q", "-e", "-c", " ".join([*command, "--out", str(tmp_path / "tty")]), str(typescript)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert terminal.returncode == 0, terminal.stdout[-2000:]
    screen = typescript.read_text(errors="replace") + terminal.stdout  # script's copy of the screen, and its own
    assert "┏━" in screen and "cell eta" in screen and "\x1b[1A" in screen  # rich's table, redrawn in place
    assert "standard/synthetic/GN" in screen and "2/2 cells: 2 done" in screen
    piped = subprocess.run(
        [*command, "--out", str(tmp_path / "pipe")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert piped.returncode == 0 and "┃" not in piped.stderr and "\x1b[" not in piped.stderr
    assert "[harness] 2/2 cells: 2 done, 0 failed, 0 skipped, 0 running, 0 waiting" in piped.stderr
