"""Results are written atomically, read back whole with pandas, and a rerun redoes only what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.grid import Filters, expand_grid
from harness.scheduler import RunOptions, run_grid
from results.load import with_config_columns
from results.report import load_tables
from results.schema import SCHEMA_VERSION
from results.store import CHECKSUMS, OutputError, ResultStore

TINY_GRID = """
name: tiny
experiments:
  - tag: t
    methods: [standard, ewc]
    streams: [{{name: synthetic, num_tasks: 2, steps_per_task: {steps}}}]
    scenarios: [GG, GNs]
    backbone: {{name: fc, hidden: [16]}}
    seeds: {seeds}
    training: {{probe_every: 10}}
"""


def write_grid(tmp_path: Path, steps: int = 20, seeds: int = 1) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_GRID.format(steps=steps, seeds=seeds))
    return str(path)


def quiet(line: str) -> None:
    pass


def test_a_grid_reads_back_whole_with_pandas(tmp_path: Path) -> None:
    cells = expand_grid(write_grid(tmp_path))
    summary = run_grid(cells, RunOptions(out=tmp_path / "out", executor="inline", progress=quiet))
    assert (summary.done, summary.failed, summary.skipped) == (4, 0, 0)
    runs = pd.read_parquet(tmp_path / "out" / "runs")
    evals = pd.read_parquet(tmp_path / "out" / "evals")
    assert sorted(runs.cell_id) == sorted(c.cell_id for c in cells)
    assert set(runs.status) == {"ok"} and (runs.schema_version == SCHEMA_VERSION).all()
    assert set(evals.cell_id) == set(runs.cell_id)
    assert {"accuracy", "probe_accuracy", "storage_bytes", "train_loss"} <= set(evals.metric)
    assert pq.read_schema(tmp_path / "out" / "runs" / f"{cells[0].cell_id}.parquet").metadata[b"schema_version"]


def test_rerun_skips_finished_and_redoes_missing_corrupt_and_failed_cells(tmp_path: Path) -> None:
    cells = expand_grid(write_grid(tmp_path))
    out = tmp_path / "out"
    run_grid(cells, RunOptions(out=out, executor="inline", progress=quiet))
    store = ResultStore(out)
    missing, corrupt, failed, kept = (c.cell_id for c in cells)
    (out / "runs" / f"{missing}.parquet").unlink()
    (out / "runs" / f"{corrupt}.parquet").write_bytes(b"PAR1 truncated")
    run = store.read_run(failed)
    assert run is not None
    store.write_cell({**run, "status": "failed", "error": "RuntimeError: injected"}, [])
    (out / "runs" / ".half-written.parquet.tmp").write_bytes(b"junk")  # a killed writer leaves only dot-files

    messages: list[str] = []
    summary = run_grid(cells, RunOptions(out=out, executor="inline", progress=messages.append))
    assert (summary.skipped, summary.done, summary.failed) == (1, 3, 0)
    assert any("unreadable result file" in m and corrupt in m for m in messages)
    runs = pd.read_parquet(out / "runs")
    assert sorted(runs.cell_id) == sorted(c.cell_id for c in cells) and set(runs.status) == {"ok"}
    assert len(pd.read_parquet(out / "evals").drop_duplicates()) == len(pd.read_parquet(out / "evals"))
    assert store.read_run(kept)["started_at"] < store.read_run(missing)["started_at"]


def test_a_failed_cell_is_recorded_and_the_grid_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        TINY_GRID.format(steps=5, seeds=1)
        + """  - tag: diverges
    methods: [standard]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 5}]
    scenarios: [GG]
    backbone: {name: fc, hidden: [16]}
    training: {optimizer: sgd, lr: 1.0e+30}
"""
    )
    out = tmp_path / "out"
    result = run_driver(str(path), out)
    assert result.returncode == 1, result.stderr
    assert "5 cells: 4 done, 1 failed" in result.stdout
    assert "failed: standard/synthetic/GG/seed0" in result.stderr and "FloatingPointError" in result.stderr
    runs = pd.read_parquet(out / "runs")
    assert sorted(runs.status) == ["failed", "ok", "ok", "ok", "ok"]


def driver_command(grid: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "--grid", grid, "--out", str(out), "--executor", "inline"]


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal gives it, even where the tests run in the background (``nohup ... &``,
    which starts every child with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_driver(grid: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        driver_command(grid, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )


def run_driver(grid: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(driver_command(grid, out), capture_output=True, text=True, timeout=300)


def wait_for_results(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list((out / "runs").glob("*.parquet"))) if (out / "runs").is_dir() else 0
        if done >= count:
            return done
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} cells finished in {timeout}s")


def test_interrupted_driver_loses_nothing_finished_and_a_rerun_resumes(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, steps=300, seeds=2)  # 8 cells of about a second each
    out = tmp_path / "out"
    total = len(expand_grid(grid))

    process = start_driver(grid, out)
    wait_for_results(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted; finished cells are saved" in err
    after_sigint = len(pd.read_parquet(out / "runs"))
    assert 2 <= after_sigint < total

    process = start_driver(grid, out)
    wait_for_results(out, after_sigint + 1, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    after_sigkill = pd.read_parquet(out / "runs")  # no half file is visible, whatever the kill interrupted
    assert after_sigkill.cell_id.is_unique and set(after_sigkill.status) == {"ok"}

    result = run_driver(grid, out)
    assert result.returncode == 0, result.stderr
    assert f"{len(after_sigkill)} already finished" in result.stdout
    assert f"{total - len(after_sigkill)} done" in result.stdout
    runs = pd.read_parquet(out / "runs")
    assert len(runs) == total and runs.cell_id.is_unique


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, steps=5000, seeds=2)  # minutes of work: the first run holds the folder throughout
    out = tmp_path / "out"
    first = start_driver(grid, out)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".lock").is_file() or not (out / ".lock").read_text().startswith(f"pid {first.pid} "):
            assert time.monotonic() < deadline and first.poll() is None, "the first run never took the folder"
            time.sleep(0.05)
        second = run_driver(grid, out)
        assert second.returncode == 2, second.stderr
        assert f"output folder {out} is in use by another harness run (pid {first.pid} on " in second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    for path in (out / "runs").glob("*.parquet"):  # whatever finished is whole: nothing interleaved or half-written
        assert pq.read_table(path).column("status").to_pylist() == ["ok"]
    with ResultStore(out).exclusive():  # the killed holder left no stale lock
        pass


def test_a_disk_that_fills_mid_write_stops_the_run_clearly_and_leaves_no_half_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import errno

    import results.store as store_module

    cells = expand_grid(write_grid(tmp_path, steps=10))
    out = tmp_path / "out"
    real_write = store_module.pq.write_table
    writes = []

    def fill_the_disk(table, where, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        writes.append(where)
        if len(writes) == 3:  # the second cell's evals: half a file, then the disk is full
            Path(where).write_bytes(b"PAR1" + b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(store_module.pq, "write_table", fill_the_disk)
    with pytest.raises(OutputError, match="could not write the results of cell .* No space left on device"):
        run_grid(cells, RunOptions(out=out, executor="inline", progress=quiet))
    monkeypatch.setattr(store_module.pq, "write_table", real_write)
    assert not [p.name for p in out.rglob(".*.tmp")], "a temporary file was left behind"
    assert len(list((out / "runs").glob("*.parquet"))) == 1 and ResultStore(out).unreadable() == []
    summary = run_grid(cells, RunOptions(out=out, executor="inline", progress=quiet))
    assert (summary.skipped, summary.done) == (1, len(cells) - 1)
    assert pd.read_parquet(out / "runs").cell_id.is_unique


# ---- issue 14: a finished cell is whole, or it is redone ----------------------------------------------------------


def one_cell(tmp_path: Path, out: Path) -> str:
    cells = expand_grid(write_grid(tmp_path, steps=5), Filters(methods=("standard",), scenarios=("GG",)))
    assert len(cells) == 1
    run_grid(cells, RunOptions(out=out, executor="inline", progress=quiet))
    return cells[0].cell_id


def flip(path: Path, position: int, bit: int = 0) -> bytes:
    """Flip one bit of the file in place; returns the original bytes."""
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    path.write_bytes(bytes(damaged))
    return data


def test_an_evals_file_whose_footer_reads_but_data_does_not_is_redone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    evals = out / "evals" / f"{cell_id}.parquet"
    flip(evals, 40, 3)  # early in the file, in the first data page
    pq.read_metadata(evals)  # the footer still reads: metadata alone would take the cell as finished
    assert ResultStore(out).read_run(cell_id) is None
    assert str(evals) in load_tables(out).unreadable  # the report and the run agree on what is damaged

    messages: list[str] = []
    cells = expand_grid(write_grid(tmp_path, steps=5), Filters(methods=("standard",), scenarios=("GG",)))
    summary = run_grid(cells, RunOptions(out=out, executor="inline", progress=messages.append))
    assert (summary.done, summary.skipped) == (1, 0)  # redone, as the report promised
    assert any(f"unreadable result file {evals} does not match its checksum" in m for m in messages), messages
    assert len(pd.read_parquet(out / "evals")) > 0 and load_tables(out).unreadable == []


def test_no_single_flipped_bit_of_a_finished_cell_passes_for_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    store = ResultStore(out)
    assert store.read_run(cell_id) is not None
    files = [out / folder / f"{cell_id}.parquet" for folder in ("runs", "evals")] + [
        out / CHECKSUMS / f"{cell_id}.json"
    ]
    for path in files:  # ~60 places in each file, its head and footer included (bench/flip_test.py tries every byte)
        size = path.stat().st_size
        for position in sorted({*range(0, size, max(1, size // 50)), *range(max(0, size - 12), size)}):
            original = flip(path, position, position % 8)
            try:
                assert store.read_run(cell_id) is None, (
                    f"{path.name} with bit {position % 8} of byte {position} flipped"
                )
            finally:
                path.write_bytes(original)
    assert store.read_run(cell_id) is not None


def test_a_folder_written_before_checksums_is_still_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    for path in (out / CHECKSUMS).iterdir():
        path.unlink()
    assert ResultStore(out).read_run(cell_id)["status"] == "ok"  # nothing finished is lost on upgrading
    evals = out / "evals" / f"{cell_id}.parquet"
    flip(evals, 40, 3)  # without a checksum record, the Parquet page checksums still catch it
    assert ResultStore(out).read_run(cell_id) is None


SHARED = """
name: {name}
experiments:
  - tag: {tag}
    methods: [standard{more}]
    streams: [{{name: synthetic, num_tasks: 2, steps_per_task: 5}}]
    scenarios: [GG]
    backbone: {{name: fc, hidden: [8]}}
"""


def test_a_cell_shared_by_two_grids_in_one_folder_keeps_both_grids_tags(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import results.store as store_module

    out = tmp_path / "out"
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(SHARED.format(name="first", tag="fig-a", more=""))
    second.write_text(SHARED.format(name="second", tag="fig-b", more=", ewc"))
    shared = expand_grid(str(first))[0].cell_id
    run_grid(expand_grid(str(first)), RunOptions(out=out, executor="inline", progress=quiet))

    real_replace = store_module.os.replace  # a kill as the updated runs file takes its name: the old one holds
    monkeypatch.setattr(
        store_module.os,
        "replace",
        lambda src, dst: (
            (_ for _ in ()).throw(KeyboardInterrupt)
            if str(dst).endswith(f"runs/{shared}.parquet")
            else real_replace(src, dst)
        ),
    )
    with pytest.raises(KeyboardInterrupt):
        run_grid(expand_grid(str(second)), RunOptions(out=out, executor="inline", progress=quiet))
    monkeypatch.undo()
    assert ResultStore(out).read_run(shared)["tags"] == "fig-a"  # still finished: nothing lost

    summary = run_grid(expand_grid(str(second)), RunOptions(out=out, executor="inline", progress=quiet))
    assert summary.skipped == 1
    assert ResultStore(out).read_run(shared)["tags"] == "fig-a,fig-b"
    again = run_grid(expand_grid(str(second)), RunOptions(out=out, executor="inline", progress=quiet))
    assert (again.skipped, again.done) == (2, 0)
    assert not [p.name for p in out.rglob(".*.tmp")]


def test_ctrl_c_in_the_first_seconds_exits_130_in_one_line(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, steps=5)
    for delay in (0.3, 1.0, 2.0):  # while Python, numpy, torch and the harness are still being imported
        process = start_driver(grid, tmp_path / "out")
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        if process.returncode == 0:
            continue  # a fast machine finished the grid first
        assert process.returncode == 130, err
        lines = err.strip().splitlines()  # the message alone (after progress lines, had the grid started)
        assert lines[-1] == "harness: interrupted; finished cells are saved, rerun the same command to resume", err
        assert all(line.startswith("[harness] ") for line in lines[:-1]), err
        assert "Traceback" not in err, err


def test_a_run_row_that_cannot_be_written_leaves_no_evals_file_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    store = ResultStore(out)
    run = store.read_run(cell_id)
    evals = (out / "evals" / f"{cell_id}.parquet").read_bytes()
    with pytest.raises(OverflowError):  # a seed beyond int64 (refused by grid validation now) fails before any write
        store.write_cell({**run, "seed": 10**23}, [])
    assert (out / "evals" / f"{cell_id}.parquet").read_bytes() == evals and store.read_run(cell_id) == run


def test_the_output_folder_describes_itself(tmp_path: Path) -> None:
    from results.folder_readme import folder_readme
    from results.schema import EVALS, METRICS, RUNS

    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    readme = (out / "README.md").read_text()
    assert readme == folder_readme()
    for name in [*RUNS.names, *EVALS.names, *METRICS]:
        assert f"`{name}`" in readme, name
    for table in ("runs", "evals"):
        schema = pq.read_schema(out / table / f"{cell_id}.parquet")
        assert all(field.metadata and field.metadata[b"description"] for field in schema), table
    runs = pd.read_parquet(out / "runs")
    assert str(runs.started_at.dtype) == "datetime64[us, UTC]" and list(runs.node_id) == [""]  # inline: no Ray
    assert abs(pd.Timestamp.now(tz="UTC") - runs.started_at.iloc[0]) < pd.Timedelta(minutes=10)
    typed = with_config_columns(load_tables(out).runs)
    assert typed["training.lr"].dtype == "float64" and typed["backbone.name"].iloc[0] == "fc"

    (out / "README.md").write_text("# Our notes on this run\n")  # a README of the researcher's is theirs
    assert not ResultStore(out).write_readme()
    assert (out / "README.md").read_text() == "# Our notes on this run\n"


def test_a_runs_file_of_an_earlier_schema_reads_as_this_one_and_takes_new_tags(tmp_path: Path) -> None:
    import pyarrow as pa

    out = tmp_path / "out"
    cell_id = one_cell(tmp_path, out)
    path = out / "runs" / f"{cell_id}.parquet"
    row = pq.read_table(path).to_pylist()[0]
    started = row["started_at"].timestamp()
    del row["node_id"]
    pq.write_table(pa.Table.from_pylist([{**row, "started_at": started, "schema_version": 3}]), path)
    (out / CHECKSUMS / f"{cell_id}.json").unlink()  # as a schema-3 folder written before checksums

    runs = load_tables(out).runs
    assert abs(runs.started_at.iloc[0].timestamp() - started) < 1e-5 and runs.node_id.iloc[0] == ""
    assert ResultStore(out).merge_tags(cell_id, ["later"])
    updated = ResultStore(out).read_run(cell_id)
    assert updated["tags"].endswith(",later") and updated["schema_version"] == 3  # the version that recorded it
