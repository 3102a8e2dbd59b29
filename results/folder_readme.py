"""OUT/README.md: what an output folder of ``harness run`` holds, written into it, generated from the schemas so it
cannot fall out of step with the files beside it. No torch here."""

from __future__ import annotations

import pyarrow as pa

from results.schema import DIAGNOSTIC_PREFIX, EVALS, METRICS, RUNS, SCHEMA_VERSION

README_NAME = "README.md"

LAYOUT = (
    ("runs/<cell_id>.parquet", "one row per finished cell (ok or failed): what ran, how it ended, what it cost"),
    ("evals/<cell_id>.parquet", "every measurement of that cell, one row per (step, task, metric)"),
    ("checksums/<cell_id>.json", "sha256 of the cell's two files: a file that does not match is not counted"),
    ("plans/<hash>.json", "the cells each run set out to do: the report lists the unfinished ones"),
    ("partial/<cell_id>.parquet", "evals so far of a running or interrupted cell (progress, never a result)"),
    ("checkpoints/", "state of interrupted cells, taken up by the next run of the same command"),
)

READING = """```python
import pandas as pd

runs = pd.read_parquet("runs")  # one row per cell
evals = pd.read_parquet("evals")  # one row per measurement
accuracy = evals[evals.metric == "accuracy"].merge(runs[["cell_id", "method", "seed"]], on="cell_id")
```

```sql
-- DuckDB, in this folder
SELECT method, seed, training->>'$.lr' AS lr, started_at FROM 'runs/*.parquet' WHERE status = 'ok';
SELECT cell_id, segment, eval_task, value FROM 'evals/*.parquet' WHERE metric = 'accuracy';
```

Polars: `pl.read_parquet("runs/*.parquet")`. Or, with the harness installed,
`results.load.load_tables(folder)` checks every file against its checksum first, and
`harness report FOLDER` builds the leaderboard."""


def _type(field: pa.Field) -> str:
    return "timestamp (UTC)" if pa.types.is_timestamp(field.type) else str(field.type)


def _columns(schema: pa.Schema) -> list[str]:
    lines = ["| column | type | unit | description |", "| --- | --- | --- | --- |"]
    for field in schema:
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        lines.append(f"| `{field.name}` | {_type(field)} | {meta.get('unit', '')} | {meta.get('description', '')} |")
    return lines


def folder_readme() -> str:
    """The README of an output folder, in Markdown."""
    lines = [
        "# Results of `harness run`",
        "",
        f"Written by the harness (schema version {SCHEMA_VERSION}; each runs row says which version recorded it).",
        "Accuracies are fractions in [0, 1] here; the report prints them in percent. Every Parquet field",
        "carries this description and unit in its metadata too.",
        "",
        "## Layout",
        "",
        *[f"- `{path}`: {what}" for path, what in LAYOUT],
        "",
        "## Reading it",
        "",
        READING,
        "",
        "## runs",
        "",
        *_columns(RUNS),
        "",
        "## evals",
        "",
        *_columns(EVALS),
        "",
        "## Metrics (the evals table's `metric` column)",
        "",
        "| metric | unit of `value` | what |",
        "| --- | --- | --- |",
        *[f"| `{name}` | {unit} | {what} |" for name, (what, unit) in METRICS.items()],
        f"| `{DIAGNOSTIC_PREFIX}<name>` | the method's | a method's own diagnostic, never a metric |",
        "",
    ]
    return "\n".join(lines)
