"""The report's first layer: an output folder of ``harness run`` read into tables, or one clear error.

No torch here: a report can be built on any machine that can read Parquet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

RUN_COLUMNS = {"cell_id", "method", "stream", "scenario", "status"}


class ReportError(ValueError):
    """A folder a report cannot be built from; the message says why in one line."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Tables:
    runs: pd.DataFrame  # one row per cell with a readable runs file (ok or failed)
    evals: pd.DataFrame  # the evals of the ok cells
    unreadable: list[str]  # files that exist but do not read
    unfinished: pd.DataFrame  # planned cells with no runs file yet (running, queued, interrupted)


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pq.read_table(path).to_pandas()
    except Exception:
        return None


def load_tables(root: Path) -> Tables:
    """Read an output folder of ``harness run``; a missing, empty or foreign folder is a ReportError."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder; give the output folder of `harness run` (e.g. runs/smoke)")
    files = sorted((root / "runs").glob("*.parquet")) if (root / "runs").is_dir() else []
    plans = sorted((root / "plans").glob("*.json")) if (root / "plans").is_dir() else []
    if not files and not plans:
        raise ReportError(
            f"{root} holds no results: expected runs/<cell>.parquet and evals/<cell>.parquet as `harness run` writes"
        )
    runs, unreadable = [], []
    for path in files:
        table = _read(path)
        if table is None:
            unreadable.append(str(path))
        elif not RUN_COLUMNS <= set(table.columns):
            missing = sorted(RUN_COLUMNS - set(table.columns))
            raise ReportError(f"{path} is not a runs table of the harness (no column {missing[0]!r})")
        else:
            runs.append(table)
    run_table = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=sorted(RUN_COLUMNS))
    evals = []
    for cell_id in run_table.loc[run_table["status"] == "ok", "cell_id"]:
        path = root / "evals" / f"{cell_id}.parquet"
        table = _read(path)
        if table is None:
            unreadable.append(str(path))
            run_table = run_table[run_table["cell_id"] != cell_id]
        else:
            evals.append(table)
    planned = [entry for path in plans for entry in json.loads(path.read_text())]
    finished = set(run_table["cell_id"])
    unfinished = pd.DataFrame([p for p in planned if p["cell_id"] not in finished]).drop_duplicates("cell_id")
    return Tables(run_table, pd.concat(evals, ignore_index=True) if evals else pd.DataFrame(), unreadable, unfinished)
