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
    # written by this schema or an earlier one that load_tables reads as this one (results.schema.upgrade_run_record)
    assert set(tables.runs.schema_version) <= set(range(2, SCHEMA_VERSION + 1))
    assert str(tables.runs.started_at.dtype).endswith("UTC]") and (tables.runs.started_at.dt.year >= 2026).all()
    assert set(tables.evals.cell_id) == set(tables.runs.cell_id)
    assert (folder / "leaderboard.md").is_file()
