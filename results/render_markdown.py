"""The leaderboard as Markdown (``leaderboard.md``). No torch here."""

from __future__ import annotations

from results.load import Tables
from results.sections import Section
from results.text import STATISTICS, failed_cells, headings, legend, row_cells, summary_line, unfinished_cells


def md_escape(text: str) -> str:
    """Text that reads as itself in a table cell: no column breaks, no markup."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _section_lines(section: Section, images: str) -> list[str]:
    lines = [f"## {section.stream} · {section.scenario}", ""]
    lines.append("| " + " | ".join(headings()) + " |")
    lines.append("|" + " --- |" * len(headings()))
    for row in section.rows:
        lines.append("| " + " | ".join(md_escape(c) for c in row_cells(row)) + " |")
    lines.append("")
    for kind, name in section.images.items():
        lines.append(f"![{section.anchor} {kind}]({images}/{name})")
    return lines + [""]


def _problem_lines(tables: Tables) -> list[str]:
    lines = ["## Failed cells", ""]
    failed = failed_cells(tables)
    if not failed:
        lines += ["None.", ""]
    for cell in failed:
        lines.append(f"- `{cell.cell_id}` {md_escape(cell.label)}: {md_escape(cell.error.splitlines()[0])}")
    lines += ["", "## Cells not finished", ""]
    unfinished = unfinished_cells(tables)
    if not unfinished:
        lines += ["None.", ""]
    lines += [
        f"- `{cell.cell_id}` {md_escape(cell.label)}" + (f": {md_escape(cell.progress)}" if cell.progress else "")
        for cell in unfinished
    ]
    if tables.unreadable:
        lines += ["", "## Unreadable result files (the next `harness run` of their grid here redoes their cells)", ""]
        lines += [f"- {md_escape(path)}" for path in tables.unreadable]
    if tables.ignored:
        lines += ["", "## Files skipped (no cell's results: left as they are)", ""]
        lines += [f"- {md_escape(why)}" for why in tables.ignored]
    return lines + [""]


def render_markdown(sections: list[Section], tables: Tables, images: str, title: str) -> str:
    """The whole document; ``images`` is the folder of the plots, relative to the document."""
    lines = [f"# {title}", "", summary_line(sections, tables), ""]
    lines += [f"{STATISTICS} {legend()}", ""]
    for section in sections:
        lines += _section_lines(section, images)
    lines += _problem_lines(tables)
    return "\n".join(lines) + "\n"
