"""One Parquet file set per cell, written atomically; an output folder is a resumable record of a grid.

Layout: ``OUT/evals/<cell_id>.parquet`` then ``OUT/runs/<cell_id>.parquet``;
``OUT/plans/<hash>.json`` lists the cells a run meant to finish, so that a
report can tell cells not finished (running, queued, interrupted) from absent.
Each file is written under a dot-prefixed temporary name (which Parquet
readers skip) and renamed into place; the runs file goes last, so a cell is
finished exactly when its runs file exists, reads, and says "ok".
``pd.read_parquet(OUT / "runs")`` reads a whole folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from results.schema import EVALS, RUNS, SCHEMA_VERSION, check_columns


class OutputError(OSError):
    def __str__(self) -> str:
        return str(self.args[0])


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write under a dot-prefixed temporary name, flush it to disk, then rename it into place: readers see
    the old file or the whole new one, never a part; a failed write leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table_atomic(table: pa.Table, path: Path) -> None:
    _replace_atomically(path, lambda tmp: pq.write_table(table, tmp))


def write_text_atomic(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.evals_dir = self.root / "evals"

    def ensure_writable(self) -> None:
        """Create the folders and prove a file can be written there, or raise OutputError in one line."""
        try:
            for folder in (self.runs_dir, self.evals_dir):
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".write-test-{uuid.uuid4().hex}"
                probe.write_bytes(b"ok")
                probe.unlink()
        except OSError as error:
            raise OutputError(f"output folder {self.root} cannot be written: {error.strerror or error}") from None

    def write_cell(self, run: dict[str, Any], evals: Iterable[dict[str, Any]]) -> None:
        """Write a cell's evals, then its run row; a failed write (disk full, folder gone) leaves no file that
        claims the cell finished, and raises OutputError in one line."""
        cell_id = run["cell_id"]
        eval_rows = list(evals)
        run_row = {**run, "schema_version": SCHEMA_VERSION}
        check_columns(run_row, RUNS)
        for row in eval_rows:
            check_columns(row, EVALS)
        try:
            write_table_atomic(pa.Table.from_pylist(eval_rows, schema=EVALS), self.evals_dir / f"{cell_id}.parquet")
            write_table_atomic(pa.Table.from_pylist([run_row], schema=RUNS), self.runs_dir / f"{cell_id}.parquet")
        except OSError as error:
            raise OutputError(
                f"could not write the results of cell {cell_id} into {self.root}: {error.strerror or error}; "
                "cells already written are kept, and rerunning the same command resumes"
            ) from None

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the folder for one run: a second run into it is refused at once, not interleaved.

        ``flock`` on ``OUT/.lock``: the OS releases it when the holder exits, even when killed, so no stale
        lock is ever left behind. (On network file systems without flock support it does not protect.)
        """
        path = self.root / ".lock"
        handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise OutputError(
                    f"output folder {self.root} is in use by another harness run ({holder}); "
                    "wait for it to finish or give another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    def write_plan(self, cells: list[dict[str, Any]]) -> Path:
        """Record the cells a run is about to work on (``cell_id``, ``label``, ``grid``, ``tags``...)."""
        folder = self.root / "plans"
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cells, sort_keys=True)
        path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        if not path.exists():
            write_text_atomic(path, text)
        return path

    def read_run(self, cell_id: str) -> dict[str, Any] | None:
        """The cell's run row, or None when it is missing or unreadable (then the cell is redone)."""
        path = self.runs_dir / f"{cell_id}.parquet"
        if not path.is_file():
            return None
        try:
            rows = pq.read_table(path).to_pylist()
            pq.read_metadata(self.evals_dir / f"{cell_id}.parquet")
        except Exception:
            return None
        return rows[0] if len(rows) == 1 else None

    def finished(self, cell_ids: Iterable[str]) -> set[str]:
        """The cells among cell_ids recorded as finished successfully."""
        done = set()
        for cell_id in cell_ids:
            run = self.read_run(cell_id)
            if run is not None and run.get("status") == "ok":
                done.add(cell_id)
        return done

    def unreadable(self) -> list[Path]:
        """Result files that exist but cannot be read (truncated, corrupt)."""
        bad = []
        for folder in (self.runs_dir, self.evals_dir):
            for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
                try:
                    pq.read_metadata(path)
                except Exception:
                    bad.append(path)
        return bad
