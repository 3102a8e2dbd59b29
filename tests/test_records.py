"""The recorded runs behind REPRODUCING.md stay readable by the report: every file reads, every cell finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from results.load import load_tables
from results.schema import SCHEMA_VERSION

RECORDS = Path(__file__).resolve().parents[1] / "bench" / "records"
FOLDERS = sorted(path for path in RECORDS.iterdir() if (path / "runs").is_dir())


def test_there_are_records() -> None:
    assert FOLDERS, f"no recorded runs under {RECORDS}"


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_a_record_reads_whole(folder: Path) -> None:
    tables = load_tables(folder)
    assert not tables.unreadable and tables.unfinished.empty
    assert set(tables.runs.status) == {"ok"}
    # written by this schema or an earlier one that differs only by columns added since (3 added runs.resumes)
    assert set(tables.runs.schema_version) <= {2, SCHEMA_VERSION}
    assert set(tables.evals.cell_id) == set(tables.runs.cell_id)
    assert (folder / "leaderboard.md").is_file()
