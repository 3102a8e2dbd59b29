"""One Parquet file set per cell, written atomically; an output folder is a resumable record of a grid.

Layout: ``OUT/evals/<cell_id>.parquet``, then ``OUT/checksums/<cell_id>.json``
(the SHA-256 of both files), then ``OUT/runs/<cell_id>.parquet``;
``OUT/plans/<hash>.json`` lists the cells a run meant to finish, so that a
report can tell cells not finished (running, queued, interrupted) from absent.
Running cells add ``OUT/checkpoints/<cell_id>.pt`` and ``OUT/partial/<cell_id>
.parquet`` (``harness/checkpoint.py``), which are never read as results and go
once the cell's results are written.
Each file is written under a dot-prefixed temporary name (which Parquet
readers skip) and renamed into place; the runs file goes last, so a cell is
finished exactly when its runs file exists, says "ok" and holds its own
cell_id, and both files are whole: their bytes match the checksums (every
byte of a file, its footer too) and they read back fully with their Parquet
page checksums verified. Folders written before the checksums existed are
still read: their files must read back fully. ``pd.read_parquet(OUT / "runs")``
reads a whole folder.
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
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from results.folder_readme import README_NAME, folder_readme
from results.schema import EVALS, RUNS, SCHEMA_VERSION, check_columns, upgrade_run_record

CHECKSUMS = "checksums"  # OUT/checksums/<cell_id>.json: {"evals": sha256, "runs": [sha256, ...]}


class OutputError(OSError):
    def __str__(self) -> str:
        return str(self.args[0])


class DamagedFile(Exception):
    """A result file that exists but is not whole: it does not read, or its bytes do not match its checksum."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


def _replace_atomically(
    path: Path, write: Callable[[Path], None], before_replace: Callable[[Path], None] | None = None
) -> None:
    """Write under a dot-prefixed temporary name, flush it to disk, then rename it into place: readers see
    the old file or the whole new one, never a part; a failed write leaves nothing behind. ``before_replace``
    sees the whole temporary file just before it takes the name."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, write_page_checksum=True)  # a CRC on every data page: readers can verify them


def write_table_atomic(table: pa.Table, path: Path, before_replace: Callable[[Path], None] | None = None) -> str:
    """Write the table atomically, with page checksums; returns the SHA-256 of the file written."""
    digest = ""

    def hashed(tmp: Path) -> None:
        nonlocal digest
        digest = file_sha256(tmp)
        if before_replace is not None:
            before_replace(tmp)

    _replace_atomically(path, lambda tmp: _write_parquet(table, tmp), hashed)
    return digest


def read_table_verified(path: Path, sha256: Collection[str] | None = None) -> pa.Table:
    """The whole table, read back with every page checksum verified; with ``sha256``, the file's bytes must
    hash to one of them as well. Raises DamagedFile."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DamagedFile(path, f"cannot be read ({error.strerror or error})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() not in sha256:
        raise DamagedFile(path, "does not match its checksum (damaged since, or its rewrite was interrupted)")
    try:
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
        table.schema.names  # noqa: B018  (decoded now: a damaged footer may hold a name that is not UTF-8)
        return table
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise _damaged(path, error) from None


def _damaged(path: Path, error: Exception) -> DamagedFile:
    reason = " ".join(str(error).split())[:120]
    return DamagedFile(path, f"does not read as Parquet ({type(error).__name__}: {reason})")


def rows_of(table: pa.Table, path: Path) -> list[dict[str, Any]]:
    """A (small) table's rows; a damaged file whose values do not convert raises DamagedFile."""
    try:
        return table.to_pylist()
    except Exception as error:
        raise _damaged(path, error) from None


def read_checksums(root: Path, cell_id: str) -> dict[str, Any] | None:
    """A cell's checksums, or None for a cell written before checksums existed. Raises DamagedFile."""
    path = Path(root) / CHECKSUMS / f"{cell_id}.json"
    if not path.exists():
        return None
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))
        if not (
            isinstance(sums, dict)
            and isinstance(sums.get("evals"), str)
            and isinstance(sums.get("runs"), list)
            and all(isinstance(h, str) for h in sums["runs"])
        ):
            raise ValueError("not a checksum record")
    except (OSError, ValueError) as error:
        raise DamagedFile(path, f"does not read ({type(error).__name__})") from None
    return sums


def read_cell(root: Path, cell_id: str, with_evals: bool = True) -> tuple[dict[str, Any], pa.Table | None]:
    """A cell's run row (and its evals), each file read whole and checked as the module docstring says.
    Raises DamagedFile when it is not whole, or is not this cell's."""
    root = Path(root)
    sums = read_checksums(root, cell_id)
    path = root / "runs" / f"{cell_id}.parquet"
    rows = rows_of(read_table_verified(path, None if sums is None else sums["runs"]), path)
    if len(rows) != 1 or not isinstance(rows[0], dict) or rows[0].get("cell_id") != cell_id:
        found = sorted({str(row.get("cell_id")) for row in rows})
        raise DamagedFile(path, f"holds {len(rows)} rows of cell(s) {', '.join(found)[:100]}, not one row of its own")
    evals = None
    if with_evals:
        evals = read_table_verified(root / "evals" / f"{cell_id}.parquet", None if sums is None else [sums["evals"]])
    return rows[0], evals


def write_text_atomic(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.evals_dir = self.root / "evals"
        self.checksums_dir = self.root / CHECKSUMS

    def check_location(self) -> None:
        """Refuse, in one line and creating nothing, an output folder that is a filesystem root or the home folder:
        a run writes runs/, evals/, checksums/, plans/ and .lock into it."""
        resolved = self.root.expanduser().resolve()
        if resolved.parent == resolved:
            what = "the root of the filesystem"
        elif resolved == Path.home().resolve():
            what = "your home folder"
        else:
            return
        raise OutputError(
            f"output folder {self.root} is {what}; give a folder of its own for the results (e.g. runs/<grid>)"
        )

    def ensure_writable(self) -> None:
        """Create the folders and prove a file can be written there, or raise OutputError in one line."""
        try:
            for folder in (self.runs_dir, self.evals_dir, self.checksums_dir):
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".write-test-{uuid.uuid4().hex}"
                probe.write_bytes(b"ok")
                probe.unlink()
        except OSError as error:
            raise OutputError(f"output folder {self.root} cannot be written: {error.strerror or error}") from None

    def write_readme(self) -> bool:
        """OUT/README.md, the folder's schema and units (results.folder_readme), when missing or out of date; a
        README.md of someone else's (not one the harness wrote) is left alone. Returns whether it was written."""
        path = self.root / README_NAME
        text = folder_readme()
        try:
            current = path.read_text(encoding="utf-8") if path.exists() else None
        except (OSError, UnicodeDecodeError):
            return False
        if current == text or (current is not None and not current.startswith(text.split("\n", 1)[0])):
            return False
        try:
            write_text_atomic(path, text)
        except OSError as error:
            raise OutputError(f"could not write {path}: {error.strerror or error}") from None
        return True

    def write_cell(self, run: dict[str, Any], evals: Iterable[dict[str, Any]]) -> None:
        """Write a cell's evals, then its run row; a failed write (disk full, folder gone) leaves no file that
        claims the cell finished, and raises OutputError in one line."""
        cell_id = run["cell_id"]
        eval_rows = list(evals)
        run_row = {**run, "schema_version": SCHEMA_VERSION}
        check_columns(run_row, RUNS)
        for row in eval_rows:
            check_columns(row, EVALS)
        eval_table = pa.Table.from_pylist(eval_rows, schema=EVALS)  # both built before either is written
        run_table = pa.Table.from_pylist([run_row], schema=RUNS)
        try:
            evals_sha = write_table_atomic(eval_table, self.evals_dir / f"{cell_id}.parquet")
            self._write_run(cell_id, run_table, evals_sha, keep=None)
        except OSError as error:
            raise OutputError(
                f"could not write the results of cell {cell_id} into {self.root}: {error.strerror or error}; "
                "cells already written are kept, and rerunning the same command resumes"
            ) from None

    def _write_run(self, cell_id: str, table: pa.Table, evals_sha: str, keep: str | None) -> None:
        """The runs file, last: the checksums (of the evals and of this file, and of ``keep``, the runs file it
        replaces) are written just before it takes its name, so whichever runs file a kill leaves matches."""
        sums_path = self.checksums_dir / f"{cell_id}.json"
        sums_path.parent.mkdir(parents=True, exist_ok=True)

        def record(tmp: Path) -> None:
            runs = [h for h in (keep, file_sha256(tmp)) if h]
            write_text_atomic(sums_path, json.dumps({"evals": evals_sha, "runs": runs}, sort_keys=True))

        runs_sha = write_table_atomic(table, self.runs_dir / f"{cell_id}.parquet", record)
        if keep is not None and keep != runs_sha:
            write_text_atomic(sums_path, json.dumps({"evals": evals_sha, "runs": [runs_sha]}, sort_keys=True))

    def merge_tags(self, cell_id: str, tags: Iterable[str]) -> bool:
        """Add tags to a finished cell's runs row (a cell shared by several grids carries all their tags); returns
        whether it changed. The evals are left as they are; the runs file is replaced atomically."""
        run, _ = read_cell(self.root, cell_id)
        have = [t for t in str(run.get("tags") or "").split(",") if t]
        merged = list(dict.fromkeys([*have, *tags]))
        if merged == have:
            return False
        sums = read_checksums(self.root, cell_id)
        runs_path = self.runs_dir / f"{cell_id}.parquet"
        evals_sha = sums["evals"] if sums else file_sha256(self.evals_dir / f"{cell_id}.parquet")
        table = pa.Table.from_pylist([{**upgrade_run_record(run), "tags": ",".join(merged)}], schema=RUNS)
        try:
            self._write_run(cell_id, table, evals_sha, keep=file_sha256(runs_path))
        except OSError as error:
            raise OutputError(f"could not update the tags of cell {cell_id} in {self.root}: {error.strerror}") from None
        return True

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the folder for one run: a second run into it is refused at once, not interleaved.

        ``flock`` on ``OUT/.lock``: the OS releases it when the holder exits, even when killed, so no stale
        lock is ever left behind. (On network file systems without flock support it does not protect.)
        """
        path = self.root / ".lock"
        try:
            handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
        except OSError as error:
            what = "a folder" if path.is_dir() else "not a file this run can open"
            raise OutputError(
                f"cannot lock the output folder: {path} is {what} ({error.strerror or error}); "
                "remove it (it is only the lock of a run) or give another --out"
            ) from None
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
        """The cell's run row, or None when it is missing or not whole (then the cell is redone)."""
        run, _ = self.check(cell_id)
        return run

    def check(self, cell_id: str) -> tuple[dict[str, Any] | None, DamagedFile | None]:
        """(the cell's run row, or None; what is damaged, when a runs file exists but the cell is not whole)."""
        if not (self.runs_dir / f"{cell_id}.parquet").is_file():
            return None, None
        try:
            run, _ = read_cell(self.root, cell_id)
        except DamagedFile as damage:
            return None, damage
        return run, None

    def survey(self, cell_ids: Iterable[str]) -> tuple[dict[str, dict[str, Any]], list[DamagedFile]]:
        """The run rows of the cells among cell_ids finished successfully, and the damaged files among theirs."""
        finished, damaged = {}, []
        for cell_id in cell_ids:
            run, damage = self.check(cell_id)
            if run is not None and run.get("status") == "ok":
                finished[cell_id] = run
            if damage is not None:
                damaged.append(damage)
        return finished, damaged

    def finished(self, cell_ids: Iterable[str]) -> set[str]:
        """The cells among cell_ids recorded as finished successfully."""
        return set(self.survey(cell_ids)[0])

    def unreadable(self) -> list[Path]:
        """Result files that exist but are not whole (truncated, corrupt, not matching their checksums)."""
        bad = []
        for path in sorted(self.runs_dir.glob("*.parquet")) if self.runs_dir.is_dir() else []:
            damage = self.check(path.stem)[1]
            if damage is not None:
                bad.append(damage.path)
        for path in sorted(self.evals_dir.glob("*.parquet")) if self.evals_dir.is_dir() else []:
            if (self.runs_dir / path.name).is_file():
                continue  # checked with its runs file
            try:
                sums = read_checksums(self.root, path.stem)
                read_table_verified(path, None if sums is None else [sums["evals"]])
            except DamagedFile as damage:
                bad.append(damage.path)
        return bad
