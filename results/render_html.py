"""The leaderboard as one static HTML page (``leaderboard.html``): no server, no external assets. Every string
from results passes through ``html.escape``. No torch here."""

from __future__ import annotations

import html

import numpy as np

from results.columns import columns
from results.load import Tables
from results.sections import Row, Section
from results.text import STATISTICS, failed_cells, headings, legend, row_cells, summary_line, unfinished_cells

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; }
td:not(:first-child) { white-space: nowrap; }
th:first-child, td:first-child, td:nth-child(2), td:nth-child(3) { text-align: left; }
td.flag { color: #b00; font-weight: bold; }
img { max-width: 48%; margin: 0.3em; border: 1px solid #eee; }
img.matrix { max-width: 23%; }
nav a { margin-right: 1em; }
th { cursor: pointer; }
th[data-order="down"]::after { content: " \\25BC"; }
th[data-order="up"]::after { content: " \\25B2"; }
"""
e = html.escape


SORT_SCRIPT = r"""
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, index) => {
    th.title = "sort by this column (again: the other way)";
    th.addEventListener("click", () => {
      const body = table.tBodies[0];
      const down = th.dataset.order !== "down";
      table.querySelectorAll("th").forEach(h => delete h.dataset.order);
      th.dataset.order = down ? "down" : "up";
      const key = row => {
        const cell = row.cells[index];
        if (cell.dataset.v === "") return "";  // a metric this row lacks
        const raw = cell.dataset.v ?? cell.textContent.replace("\u2212", "-").replace(/^[\u2248\s]+/, "");
        const number = parseFloat(raw);
        return Number.isFinite(number) ? number : cell.textContent.trim();
      };
      const rank = value => (value === "" ? 2 : typeof value === "number" ? 0 : 1);
      const rows = Array.from(body.rows).map((row, order) => [key(row), order, row]);
      rows.sort((a, b) => {
        if (rank(a[0]) !== rank(b[0])) return rank(a[0]) - rank(b[0]);  // numbers, then text, empty cells last
        const c = rank(a[0]) === 0 ? a[0] - b[0] : String(a[0]).localeCompare(String(b[0]), undefined, {numeric: true});
        return (c === 0 ? a[1] - b[1] : down ? -c : c);
      });
      rows.forEach(([, , row]) => body.appendChild(row));
    });
  });
});
"""


def _row_html(row: Row) -> str:
    """A table row: the label carries the version and tags as a tooltip, a flagged difference is marked; a metric
    cell carries its mean as ``data-v``, the key its column sorts by."""
    cells = row_cells(row)
    means = [f"{m:.17g}" if np.isfinite(m := row.stats[c.name][0]) else "" for c in columns()]
    keys = [""] * (len(cells) - len(means) - 2) + [f' data-v="{m}"' for m in means] + ["", ""]
    rendered = [f"<td{key}>{e(text)}</td>" for text, key in zip(cells[:-1], keys, strict=False)]
    tooltip = f"version {row.version}; tags: {', '.join(row.tags)}"
    rendered[0] = f'<td title="{e(tooltip)}">{e(cells[0])}</td>'
    flag = ' class="flag"' if cells[-1].endswith("!") else ""
    return "<tr>" + "".join(rendered) + f"<td{flag}>{e(cells[-1])}</td></tr>"


def _section_html(section: Section, images: str) -> list[str]:
    parts = [f'<section id="{e(section.anchor)}"><h2>{e(section.stream)} · {e(section.scenario)}</h2>']
    parts.append(
        '<table class="sortable"><thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in headings()) + "</tr></thead><tbody>"
    )
    parts += [_row_html(row) for row in section.rows]
    parts.append("</tbody></table>")
    for kind, name in section.images.items():
        css = ' class="matrix"' if kind.startswith("matrix") else ""
        parts.append(f'<img{css} src="{e(images)}/{e(name)}" alt="{e(section.anchor)} {e(kind)}">')
    parts.append("</section>")
    return parts


def _problems_html(tables: Tables) -> list[str]:
    failed = failed_cells(tables)
    parts = ['<section id="failed"><h2>Failed cells</h2>', "<ul>" if failed else "<p>None.</p>"]
    parts += [f"<li><code>{e(c.cell_id)}</code> {e(c.label)}: <pre>{e(c.error)}</pre></li>" for c in failed]
    parts.append("</ul>" if failed else "")
    parts.append('</section><section id="unfinished"><h2>Cells not finished</h2>')
    unfinished = unfinished_cells(tables)
    if unfinished:
        parts.append("<ul>")
        parts += [
            f"<li><code>{e(c.cell_id)}</code> {e(c.label)}" + (f": {e(c.progress)}" if c.progress else "") + "</li>"
            for c in unfinished
        ]
        parts.append("</ul>")
    else:
        parts.append("<p>None.</p>")
    if tables.unreadable:
        parts.append("<h2>Unreadable result files</h2><ul>")
        parts += [f"<li>{e(path)}</li>" for path in tables.unreadable]
        parts.append("</ul>")
    if tables.ignored:
        parts.append("<h2>Files skipped</h2><ul>")
        parts += [f"<li>{e(why)}</li>" for why in tables.ignored]
        parts.append("</ul>")
    parts.append("</section>")
    return parts


def render_html(sections: list[Section], tables: Tables, images: str, title: str) -> str:
    """The whole page; ``images`` is the folder of the plots, relative to the page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(summary_line(sections, tables))}</p>",
        f"<p>{e(STATISTICS)} {e(legend())}</p>",
        "<nav>" + "".join(f'<a href="#{e(s.anchor)}">{e(s.stream)} · {e(s.scenario)}</a>' for s in sections),
        '<a href="#failed">failed cells</a><a href="#unfinished">not finished</a></nav>',
    ]
    for section in sections:
        parts += _section_html(section, images)
    parts += _problems_html(tables)
    return "\n".join(parts) + f"<script>{SORT_SCRIPT}</script></body></html>\n"
