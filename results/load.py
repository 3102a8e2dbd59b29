"""The report's first layer: an output folder of ``harness run`` read into tables, or one clear error.

No torch here: a report can be built on any machine that can read Parquet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from results.schema import upgrade_run_record
from results.store import DamagedFile, read_cell, read_checksums, read_table_verified

PARTIAL = "partial"  # OUT/partial/<cell_id>.parquet, written by running cells at each checkpoint
RUN_COLUMNS = {"cell_id", "method", "stream", "scenario", "status"}


class ReportError(ValueError):
    """A folder a report cannot be built from; the message says why in one line."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Tables:
    runs: pd.DataFrame  # one row per cell with a whole runs file (ok or failed), keyed by the cell_id inside it
    evals: pd.DataFrame  # the evals of the ok cells
    unreadable: list[str]  # result files that exist but are not whole: the next run of their grid redoes their cells
    unfinished: pd.DataFrame  # planned cells with no runs file yet (running, queued, interrupted)
    ignored: list[str] = field(default_factory=list)  # "path: why": files that are no cell's results (left alone)
    # the rows so far of unfinished cells that checkpointed (OUT/partial): progress, never a finished result
    partial: pd.DataFrame = field(default_factory=pd.DataFrame)


def _run_file(root: Path, path: Path, ignored: list[str]) -> pd.DataFrame | None:
    """A runs file as one row, checked as the store checks it; None (and why, in ``ignored``) for a file that is
    whole but no cell's own runs file: another table, or a copy of a cell's file under another name."""
    sums = read_checksums(path.parent.parent, path.stem)
    table = read_table_verified(path, None if sums is None else sums["runs"])
    try:
        frame = table.to_pandas()
    except Exception as error:  # a damaged file (written before checksums) whose values do not convert
        raise DamagedFile(path, f"does not convert to a table ({type(error).__name__})") from None
    if not RUN_COLUMNS <= set(frame.columns):
        missing = sorted(RUN_COLUMNS - set(frame.columns))
        ignored.append(f"{path} is not a runs table of the harness (no column {missing[0]!r})")
        return None
    if len(frame) != 1 or frame["cell_id"].iloc[0] != path.stem:
        ids = ", ".join(sorted({str(c) for c in frame["cell_id"]}))[:100]
        ignored.append(f"{path} holds cell {ids}, not cell {path.stem} (a copy under another name?); not counted")
        return None
    return pd.DataFrame([upgrade_run_record(frame.iloc[0].to_dict())])  # earlier schemas read as this one


def _planned(plans: list[Path], ignored: list[str]) -> list[dict]:
    entries = []
    for path in plans:
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(plan, list) or not all(isinstance(p, dict) and "cell_id" in p for p in plan):
                raise ValueError("not a list of planned cells")
        except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            ignored.append(f"{path} does not read as a plan, a JSON list of cells ({type(error).__name__}); skipped")
            continue
        entries += plan
    return entries


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
    runs, unreadable, ignored = [], [], []
    for path in files:
        try:
            table = _run_file(root, path, ignored)
        except DamagedFile:
            unreadable.append(str(path))
            continue
        if table is not None:
            runs.append(table)
    if ignored and not runs and not unreadable and not plans:
        raise ReportError(f"{root} holds no results of the harness: {ignored[0]}")
    run_table = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=sorted(RUN_COLUMNS))
    evals = []
    for cell_id in run_table.loc[run_table["status"] == "ok", "cell_id"]:
        try:
            _, table = read_cell(root, cell_id)
        except DamagedFile as damage:
            unreadable.append(str(damage.path))
            run_table = run_table[run_table["cell_id"] != cell_id]
        else:
            try:
                evals.append(table.to_pandas())
            except Exception:  # a damaged file (written before checksums) whose values do not convert
                unreadable.append(str(root / "evals" / f"{cell_id}.parquet"))
                run_table = run_table[run_table["cell_id"] != cell_id]
    planned = _planned(plans, ignored)
    finished = set(run_table["cell_id"])
    unfinished = pd.DataFrame([p for p in planned if p["cell_id"] not in finished]).drop_duplicates("cell_id")
    evals_table = pd.concat(evals, ignore_index=True) if evals else pd.DataFrame()
    partial = _partial_rows(root, set(unfinished["cell_id"]) if len(unfinished) else set())
    return Tables(run_table, evals_table, unreadable, unfinished, ignored, partial)


def _partial_rows(root: Path, unfinished: set[str]) -> pd.DataFrame:
    """The partial results of unfinished cells; one being replaced as it is read is simply left out."""
    frames = []
    for cell_id in sorted(unfinished):
        path = root / PARTIAL / f"{cell_id}.parquet"
        if path.exists():
            try:
                frames.append(read_table_verified(path).to_pandas())
            except (DamagedFile, OSError):
                continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


CONFIG_COLUMNS = ("method_config", "stream_config", "backbone", "training")  # JSON in the runs table


def with_config_columns(runs: pd.DataFrame, columns: tuple[str, ...] = CONFIG_COLUMNS) -> pd.DataFrame:
    """The runs table plus one typed column per setting of its JSON configs, named ``<config>.<setting>`` (e.g.
    ``training.lr``, ``method_config.ewc_lambda``); a setting a cell's config lacks is missing (NaN) there."""
    frames = [runs.reset_index(drop=True)]
    for column in columns:
        settings = pd.json_normalize([json.loads(text) if text else {} for text in runs[column]])
        frames.append(settings.add_prefix(f"{column}."))
    return pd.concat(frames, axis=1)
