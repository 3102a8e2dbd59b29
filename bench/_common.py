"""Helpers the benchmark scripts share: run cells through the harness, read their tables back."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cells import Cell  # noqa: E402
from harness.scheduler import RunOptions, run_grid  # noqa: E402
from results.store import write_table_atomic  # noqa: E402

# --settings authors: what harness/grids/psp.yaml gives each variant, after the authors' configs/paramsuper.py
# (learned contexts; a bias on complex and rotation layers; complex contexts learned with their modulus)
PSP_AUTHORS_SETTINGS = {
    "psp_binary": {"learn_contexts": True},
    "psp_complex": {"learn_contexts": True, "learn_modulus": True, "bias": True},
    "psp_rotation": {"learn_contexts": True, "bias": True},
    "psp_onepower": {"learn_contexts": True, "learn_modulus": True, "bias": True},
    "psp_fast": {"learn_contexts": True, "learn_modulus": True, "bias": True},
    "psp_fast_localmix": {"learn_contexts": True, "learn_modulus": True, "bias": True},
}


def run_cells(
    cells: Sequence[Cell], out: Path, data_dir: Path | None, executor: str = "ray"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) the cells into ``out`` and return its runs and evals tables, for these cells only."""
    summary = run_grid(cells, RunOptions(out=out, data_dir=str(data_dir) if data_dir else None, executor=executor))  # type: ignore[arg-type]
    if summary.failed:
        raise SystemExit(f"{summary.failed} cells failed: {summary.failures}")
    ids = {c.cell_id for c in cells}
    runs = pd.read_parquet(out / "runs")
    evals = pd.read_parquet(out / "evals")
    return runs[runs.cell_id.isin(ids)], evals[evals.cell_id.isin(ids)]


def append_figures(table: pd.DataFrame, path: Path) -> None:
    """Add a benchmark's rows to its Parquet file (created on first use), replacing the file atomically."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        table = pd.concat([pd.read_parquet(path), table], ignore_index=True)
    write_table_atomic(pa.Table.from_pandas(table, preserve_index=False), path)
