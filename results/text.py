"""The leaderboard's words, shared by its Markdown and HTML renderings: headings, the text of every table cell,
the legend, the summary line and the lists of failed and unfinished cells. Plain text: each renderer escapes
it for its own format. No torch here."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from results.columns import ColumnSpec, columns
from results.load import Tables
from results.protocol import protocol_differences
from results.sections import Row, Section

DIFFERENCE_FLAG = 0.03  # |ours - paper| above 3 points is flagged
STATISTICS = "Mean over seeds [95% bootstrap interval]; accuracies in %."
MISSING = "–"


def value_text(value: float, column: ColumnSpec) -> str:
    return column.format(value) if np.isfinite(value) else MISSING


def stats_text(stats: tuple[float, float, float], column: ColumnSpec) -> str:
    """The mean, and the interval where there is one that reads differently from a point."""
    mean, low, high = stats
    text = value_text(mean, column)
    if np.isfinite(low) and value_text(low, column) != value_text(high, column):
        text += f" [{value_text(low, column)}, {value_text(high, column)}]"
    return text


def metric_text(row: Row, column: ColumnSpec) -> str:
    text = stats_text(row.stats[column.name], column)
    if row.approximate(column.name) and text != MISSING:
        text = "≈ " + text
    return text


def published_text(row: Row) -> tuple[str, str]:
    """Text of the published accuracy beside ours, and the difference in points."""
    accuracy = [r for r in row.references if r.metric == "accuracy"]
    if not accuracy:
        return "", ""
    reference = accuracy[0]
    ours = row.stats["accuracy"][0]
    tasks = int(row.cells["tasks"].max())
    text = f"{100 * reference.value:.2f} ({reference.label}, after {reference.tasks} tasks)"
    if tasks != reference.tasks:
        text += f"; ours after {tasks}"
    other = protocol_differences(row.protocol, reference.required_protocol())
    if other:  # another protocol: shown, never compared
        wanted = ", ".join(f"{name}={json.dumps(value)}" for name, (_, value) in sorted(other.items()))
        return f"{text}; under another protocol ({wanted})", "other protocol"
    if not np.isfinite(ours):
        return text, ""
    difference = 100 * (ours - reference.value)
    flag = " !" if abs(ours - reference.value) > DIFFERENCE_FLAG else ""
    return text, f"{difference:+.2f}{flag}"


IDENTITY_HEADINGS = ["method", "backbone", "protocol", "tags", "seeds"]
REFERENCE_HEADINGS = ["published", "ours − paper"]


def headings() -> list[str]:
    return [*IDENTITY_HEADINGS, *[c.heading for c in columns()], *REFERENCE_HEADINGS]


def row_cells(row: Row) -> list[str]:
    """The texts of a row, one per heading."""
    published, difference = published_text(row)
    identity = [row.label, row.backbone, row.protocol_text, ", ".join(row.tags), str(row.seeds)]
    return [*identity, *[metric_text(row, column) for column in columns()], published, difference]


def legend() -> str:
    """What rows, flags and protocols mean, then what the columns with a description measure."""
    described = "; ".join(f"{c.heading}: {c.description}" for c in columns() if c.description)
    text = (
        "Rows differ in anything but the seed (method version or settings, backbone, stream or training settings); "
        f"'!' marks a difference from the paper above {100 * DIFFERENCE_FLAG:.0f} points. "
        "Protocol: the input scaling, padding, permutation of the first task and GNu training-loss outputs where they "
        "differ from the harness's defaults; a published number is compared only with rows of its own protocol."
    )
    return f"{text} {described[:1].upper()}{described[1:]}." if described else text


def summary_line(sections: list[Section], tables: Tables) -> str:
    ok = int((tables.runs["status"] == "ok").sum())
    failed = int((tables.runs["status"] != "ok").sum())
    return (
        f"{ok} cells finished, {failed} failed, {len(tables.unfinished)} not finished, "
        f"{len(tables.unreadable)} unreadable files; {len(sections)} stream x scenario tables."
    )


@dataclass(frozen=True)
class Listed:
    """A failed or unfinished cell as the lists at the end of the leaderboard name it."""

    cell_id: str
    label: str
    error: str = ""  # a failed cell's whole message
    progress: str = ""  # an unfinished cell's partial results, in words


def failed_cells(tables: Tables) -> list[Listed]:
    failed = tables.runs[tables.runs["status"] != "ok"]
    return [
        Listed(
            str(run["cell_id"]),
            f"{run['method']}/{run['stream']}/{run['scenario']}/seed{run.get('seed')}",
            str(run.get("error") or "(no message)"),
        )
        for run in failed.to_dict("records")
    ]


def partial_progress(rows: pd.DataFrame) -> str:
    """How far an unfinished cell's partial results go: its step, tasks seen and latest average accuracy."""
    if rows.empty:
        return ""
    text = f"partial results to step {int(rows['step'].max()):,}, {int(rows['tasks_seen'].max())} tasks seen"
    accuracy = rows[rows["metric"] == "accuracy"]
    if not accuracy.empty:
        latest = accuracy[accuracy["step"] == accuracy["step"].max()]
        text += f", average accuracy {100 * latest['value'].mean():.1f} % over {len(latest)} tasks then"
    return text + " (not a result)"


def unfinished_cells(tables: Tables) -> list[Listed]:
    partial = tables.partial
    listed = []
    for entry in tables.unfinished.to_dict("records"):
        cell_id = str(entry["cell_id"])
        rows = partial[partial["cell_id"] == cell_id] if not partial.empty else partial
        listed.append(Listed(cell_id, str(entry.get("label", "")), progress=partial_progress(rows)))
    return listed
