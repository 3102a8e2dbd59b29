"""A real Ray run: cells as tasks with declared resources, reused workers, clear errors for missing resources."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

import harness.scheduler as scheduler
from harness.config import ConfigError
from harness.grid import expand_grid, make_cell
from harness.scheduler import RunOptions, run_grid

GRID = """
name: ray-tiny
experiments:
  - tag: t
    methods: [standard, si]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 10}]
    scenarios: [GG, GNu]
    backbone: {name: fc, hidden: [16]}
    seeds: 2
"""


def test_ray_runs_a_tiny_grid_on_reused_workers(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    cells = expand_grid(str(path))
    lines: list[str] = []
    summary = run_grid(cells, RunOptions(out=tmp_path / "out", executor="ray", progress=lines.append))
    assert (summary.done, summary.failed) == (8, 0)
    runs = pd.read_parquet(tmp_path / "out" / "runs")
    assert len(runs) == 8 and set(runs.status) == {"ok"} and set(runs.threads) == {1}
    assert runs.pid.nunique() < len(runs), "worker processes must be reused across cells"
    assert any("8/8 cells: 8 done, 0 failed" in line for line in lines)
    assert runs.node_id.nunique() == 1 and re.fullmatch("[0-9a-f]{56}", runs.node_id.iloc[0])  # one Ray node here
    assert str(runs.started_at.dtype) == "datetime64[us, UTC]"
    # the same grid fused: each pair of seeds one Ray task, each cell its own rows, equal to its rows alone
    fused = run_grid(cells, RunOptions(out=tmp_path / "fused", executor="ray", fuse="on", progress=lines.append))
    assert (fused.done, fused.failed) == (8, 0)
    fused_runs = pd.read_parquet(tmp_path / "fused" / "runs")
    assert set(fused_runs.fused_cells) == {2} and set(runs.fused_cells) <= {1, 2}
    columns = ["cell_id", "step", "eval_task", "metric"]
    alone = pd.read_parquet(tmp_path / "out" / "evals").sort_values(columns).reset_index(drop=True)
    together = pd.read_parquet(tmp_path / "fused" / "evals").sort_values(columns).reset_index(drop=True)
    assert alone[columns].equals(together[columns])
    assert (alone.value - together.value).abs().max() <= 1e-5


def test_small_backbones_share_a_gpu_and_large_ones_get_a_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "_largest_node", lambda resource: {"GPU": 1.0, "CPU": 4.0}[resource])
    cells = [make_cell("supsup", "split_cifar100", "GG", backbone=b) for b in ("gem_resnet18", "resnet18")]
    device, resources = scheduler._resources(cells, RunOptions(out=Path("unused"), device="cuda"))
    assert device == "cuda"
    assert [resources[c.cell_id]["num_gpus"] for c in cells] == [scheduler.SMALL_MODEL_GPU_FRACTION, 1.0]


def test_asking_for_gpus_the_machine_or_cluster_lacks_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for executor in ("ray", "inline"):  # a local run is refused before Ray starts or the output folder exists
        with pytest.raises(ConfigError, match="--device cuda asks for a GPU, but torch sees none on this machine"):
            run_grid(expand_grid(str(path)), RunOptions(out=tmp_path / "out", executor=executor, device="cuda"))
        assert not (tmp_path / "out").exists()
    monkeypatch.setattr(scheduler, "_largest_node", lambda resource: {"GPU": 0.0, "CPU": 4.0}[resource])
    with pytest.raises(ConfigError, match="--device cuda asks for GPUs, but the Ray cluster has none"):
        scheduler._resources(expand_grid(str(path)), RunOptions(out=Path("unused"), device="cuda"))


def test_more_cpus_per_cell_than_the_machine_or_any_node_has_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    for executor in ("ray", "inline"):
        with pytest.raises(
            ConfigError, match=rf"--cpus-per-cell 512 is more than this machine's {os.cpu_count()} CPUs"
        ):
            run_grid(expand_grid(str(path)), RunOptions(out=tmp_path / "out", executor=executor, cpus_per_cell=512))
        assert not (tmp_path / "out").exists()
    monkeypatch.setattr(scheduler, "_largest_node", lambda resource: {"GPU": 0.0, "CPU": 4.0}[resource])
    with pytest.raises(ConfigError, match="--cpus-per-cell 512 is more than any Ray node has"):
        scheduler._resources(expand_grid(str(path)), RunOptions(out=Path("unused"), cpus_per_cell=512))


def test_sigterm_stops_a_ray_run_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("steps_per_task: 10", "steps_per_task: 400").replace("seeds: 2", "seeds: 3"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness.cli", "run", "--grid", str(path), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "runs").glob("*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    finished = len(pd.read_parquet(out / "runs"))
    assert 1 <= finished < 12
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - finished} done, 0 failed, {finished} already finished" in rerun.stdout


def descends_from_this_process(pid: int) -> bool:
    """Whether ``pid`` is a descendant of this test process (its own Ray cluster's workers are)."""
    me = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's PID, after the command name in parentheses
        if pid == me:
            return True
    return False


def ray_cell_processes() -> list[int]:
    """PIDs of this test's Ray workers running a cell now (Ray titles them ``ray::run_group`` while they do).

    Only descendants of this process: another harness run on the machine (a user's paper run) is never touched.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ray::run_group" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in pids if descends_from_this_process(pid)]


def test_a_worker_killed_mid_cell_is_retried_and_the_grid_has_every_row_once(tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("steps_per_task: 10", "steps_per_task: 400").replace("seeds: 2", "seeds: 3"))
    cells = expand_grid(str(path))
    out = tmp_path / "out"
    killed: list[int] = []
    killed_at: list[float] = []

    def kill_a_worker_mid_cell() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            running = ray_cell_processes()
            if running and list((out / "runs").glob("*.parquet")):  # one cell done, others in the middle
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
                killed_at.append(time.time())
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_mid_cell, daemon=True)
    killer.start()
    summary = run_grid(cells, RunOptions(out=out, executor="ray", fuse="on", progress=lambda _: None))
    killer.join(timeout=5)
    assert killed, "no worker was caught in the middle of a cell"
    assert (summary.done, summary.failed) == (len(cells), 0)
    runs = pd.read_parquet(out / "runs")
    assert len(runs) == len(cells) and runs.cell_id.is_unique and set(runs.status) == {"ok"}
    by_killed = runs[runs.pid == killed[0]]  # only what it finished before it died
    ended = by_killed.started_at + pd.to_timedelta(by_killed.wall_seconds, unit="s")
    assert (ended <= pd.Timestamp(killed_at[0], unit="s", tz="UTC")).all()
