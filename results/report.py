"""The leaderboard: Markdown and a static HTML page with plots, built only from an output folder's Parquet tables.

For every stream x scenario, a table of rows: cells that differ only in their
seed, aggregated as the mean and a 95% bootstrap interval over seeds. Cells
that differ in anything else (method version or settings, backbone, stream or
training settings) are separate rows, never averaged together. Published
numbers (:mod:`results.references`) sit beside ours with the difference.

The report is built in layers, one module each, every one without torch:

- :mod:`results.load`: the folder into tables (or a one-line ReportError)
- :mod:`results.derive`: one row per cell, with the value of every column
  registered in :mod:`results.columns` (final average accuracy, forgetting,
  backward transfer, task inference, bytes, samples per second)
- :mod:`results.statistics`: the mean and bootstrap interval over seeds
- :mod:`results.sections`: cells into rows and rows into ranked sections
- :mod:`results.text`, :mod:`results.render_markdown`,
  :mod:`results.render_html`: the documents; :mod:`results.plots`: the images

This module puts them together and keeps the names that callers import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from results.derive import backbone_label, cell_metrics
from results.load import ReportError, Tables, load_tables
from results.plots import plot_section
from results.render_html import render_html
from results.render_markdown import render_markdown
from results.sections import Row, Section, build_sections
from results.statistics import bootstrap_interval
from results.store import write_text_atomic

__all__ = [
    "ReportError",
    "ReportPaths",
    "Row",
    "Section",
    "Tables",
    "backbone_label",
    "bootstrap_interval",
    "build_sections",
    "cell_metrics",
    "load_tables",
    "plot_section",
    "render_html",
    "render_markdown",
    "write_report",
]


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    images: list[Path]


def write_report(root: Path, out: Path | None = None) -> ReportPaths:
    """Build ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard_files/*.png`` in ``out`` (default: root)."""
    out = Path(out or root)
    if out.exists() and not out.is_dir():
        raise ReportError(
            f"report folder {out} is a file, not a folder; give --out a folder (it is created if missing)"
        )
    tables = load_tables(root)
    images = out / "leaderboard_files"
    try:
        images.mkdir(parents=True, exist_ok=True)
        for stale in images.glob("*.png"):
            stale.unlink()
        sections = build_sections(cell_metrics(tables))
        for index, section in enumerate(sections):
            plot_section(section, images, f"s{index}")
        title = f"Leaderboard: {Path(root).resolve().name}"
        markdown = out / "leaderboard.md"
        page = out / "leaderboard.html"
        write_text_atomic(markdown, render_markdown(sections, tables, images.name, title))
        write_text_atomic(page, render_html(sections, tables, images.name, title))
    except OSError as error:  # read-only, full, a file in the way
        where = error.filename or out
        raise ReportError(
            f"cannot write the report into {out}: {where}: {error.strerror or error}; give --out a folder you can write"
        ) from None
    return ReportPaths(markdown, page, sorted(images.glob("*.png")))
