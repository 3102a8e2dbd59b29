"""The leaderboard: Markdown and a static HTML page with plots, built only from an output folder's Parquet tables.

For every stream x scenario, a table of rows: cells that differ only in their
seed, aggregated as the mean and a 95% bootstrap interval over seeds. Cells
that differ in anything else (method version or settings, backbone, stream or
training settings) are separate rows, never averaged together. Published
numbers (:mod:`results.references`) sit beside ours with the difference.

Metrics per cell, from its accuracy matrix A[i, j] (task j after segment i) at
the last evaluation: final average accuracy, forgetting and backward transfer
(see :mod:`results.metrics`), task-inference accuracy (GN/NN scenarios),
bytes to predict every task seen, training samples per second.

No torch here: a report can be built on any machine that can read Parquet.
"""

from __future__ import annotations

import html
import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from results.metrics import (
    accuracy_matrix,
    backward_transfer,
    backward_transfer_is_approximate,
    final_row,
    forgetting,
)
from results.protocol import describe_protocol, protocol_differences, protocol_of, settings_of
from results.references import REFERENCES, Reference, references_for
from results.store import write_text_atomic

BOOTSTRAP_SAMPLES = 2000
IDENTITY = ["stream", "scenario", "method", "method_version", "method_config", "backbone", "stream_config", "training"]
RUN_COLUMNS = {"cell_id", "method", "stream", "scenario", "status"}
DIFFERENCE_FLAG = 0.03  # |ours - paper| above 3 points is flagged


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


def backbone_label(raw: str) -> str:
    """The preset name of a backbone (as harness/backbones.py names them), else a short description."""
    spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    name, width = spec.get("name", "?"), spec.get("width", 64)
    if name == "fc":
        hidden = tuple(spec.get("hidden", ()))
        return "lenet_300_100" if hidden == (300, 100) else "fc_" + "_".join(str(h) for h in hidden)
    if name == "resnet18" and width == 20:
        return "gem_resnet18"
    return name if width == 64 else f"{name}_w{width}"


def _nan_safe(function: Any, matrix: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(function(matrix)) if matrix.size else float("nan")


def cell_metrics(tables: Tables) -> pd.DataFrame:
    """One row per finished cell: its identity, final metrics, and the series the plots need."""
    ok = tables.runs[tables.runs["status"] == "ok"]
    by_cell = dict(tuple(tables.evals.groupby("cell_id"))) if not tables.evals.empty else {}
    rows = []
    for run in ok.to_dict("records"):
        evals = by_cell.get(run["cell_id"], pd.DataFrame(columns=["metric", "segment", "eval_task", "value", "step"]))
        matrix = accuracy_matrix(evals)  # one row per segment: a sparse schedule leaves rows empty, never shifts them
        final = final_row(matrix)
        inference = evals[evals["metric"] == "task_inference_accuracy"]
        if not inference.empty:
            inference = inference[inference["segment"] == inference["segment"].max()]
        probes = evals[evals["metric"] == "probe_accuracy"].sort_values("step")
        rows.append(
            {
                **{key: run.get(key) for key in ("cell_id", "grid", "tags", "seed", *IDENTITY)},
                "backbone_label": backbone_label(run["backbone"]),
                "tasks": int(np.isfinite(final).sum()),
                "accuracy": float(np.nanmean(final)) if np.isfinite(final).any() else float("nan"),
                "forgetting": _nan_safe(forgetting, matrix),
                "backward_transfer": _nan_safe(backward_transfer, matrix),
                "backward_transfer_approximate": bool(matrix.size) and backward_transfer_is_approximate(matrix),
                "protocol": protocol_of(run),
                "task_inference": float(inference["value"].mean()) if not inference.empty else float("nan"),
                "storage_bytes": float(run.get("storage_bytes") or float("nan")),
                "samples_per_second": float(run.get("samples_per_second") or float("nan")),
                "matrix": matrix,
                "probe": (probes["step"].to_numpy(), probes["value"].to_numpy()),
                "average_over_tasks": _average_over_tasks(evals),
            }
        )
    return pd.DataFrame(rows)


def _average_over_tasks(evals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(tasks seen, average accuracy over them) at every evaluation: SupSup's Figures 3 to 6."""
    accuracy = evals[evals["metric"] == "accuracy"]
    if accuracy.empty:
        return np.array([]), np.array([])
    grouped = accuracy.groupby("segment").agg(seen=("tasks_seen", "max"), value=("value", "mean"))
    return grouped["seen"].to_numpy(), grouped["value"].to_numpy()


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean; (nan, nan) with fewer than two finite values."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(finite) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(finite, size=(BOOTSTRAP_SAMPLES, len(finite)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


METRICS = [  # (column, heading, kind)
    ("accuracy", "final avg accuracy", "percent"),
    ("forgetting", "forgetting", "percent"),
    ("backward_transfer", "backward transfer", "percent"),
    ("task_inference", "task inference", "percent"),
    ("storage_bytes", "bytes", "bytes"),
    ("samples_per_second", "samples/s", "rate"),
]


@dataclass
class Row:
    label: str
    method: str
    version: str
    backbone: str
    cells: pd.DataFrame  # one per seed
    stats: dict[str, tuple[float, float, float]]  # column -> (mean, low, high)
    references: list[Reference]
    tags: list[str]
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol_text(self) -> str:
        return describe_protocol(self.protocol)

    @property
    def backward_transfer_approximate(self) -> bool:
        return bool(self.cells["backward_transfer_approximate"].any())

    @property
    def seeds(self) -> int:
        return len(self.cells)


@dataclass
class Section:
    stream: str
    scenario: str
    rows: list[Row]
    images: dict[str, str] = field(default_factory=dict)  # kind -> file name

    @property
    def anchor(self) -> str:
        return f"{self.stream}-{self.scenario}"


def _varying(groups: list[pd.DataFrame], column: str) -> set[str]:
    """Setting names whose values differ between the groups (all keys when some group lacks one)."""
    dicts = [settings_of(g[column].iloc[0]) for g in groups]
    keys = set().union(*dicts) if dicts else set()
    return {k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1}


def _label(group: pd.DataFrame, method_keys: set[str], stream_keys: set[str], training_keys: set[str]) -> str:
    first = group.iloc[0]
    parts = []
    for column, keys in (("method_config", method_keys), ("stream_config", stream_keys), ("training", training_keys)):
        settings = settings_of(first[column])
        parts += [f"{k}={json.dumps(settings.get(k))}" for k in sorted(keys) if k in settings]
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{first['method']}{detail}"


def build_sections(cells: pd.DataFrame) -> list[Section]:
    sections = []
    if cells.empty:
        return sections
    for (stream, scenario), table in cells.groupby(["stream", "scenario"], sort=True):
        groups = [g for _, g in table.groupby(IDENTITY[2:], sort=False, dropna=False)]
        rows = []
        for group in groups:
            first = group.iloc[0]
            tags = sorted({t for raw in group["tags"] for t in _tags(raw)})
            same_method = [g for g in groups if g["method"].iloc[0] == first["method"]]
            # settings name a row only where the tags (the figure it belongs to) do not already tell rows apart
            same_tags = [g for g in same_method if sorted({t for raw in g["tags"] for t in _tags(raw)}) == tags]
            label = _label(
                group,
                _varying(same_method, "method_config"),
                _varying(same_tags, "stream_config"),
                _varying(same_tags, "training"),
            )
            if len({g["method_version"].iloc[0] for g in same_method}) > 1:
                label += f" [v{first['method_version']}]"
            stats = {}
            for column, _, _ in METRICS:
                values = group[column].to_numpy(float)
                mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
                stats[column] = (mean, *bootstrap_interval(values))
            references = references_for(
                stream, scenario, first["method"], settings_of(first["method_config"]), first["backbone_label"]
            )
            version = str(first["method_version"])
            row = Row(label, first["method"], version, first["backbone_label"], group, stats, references, tags)
            row.protocol = dict(first["protocol"])
            rows.append(row)
        # rows of one protocol are ranked together, never against another protocol's
        rows.sort(
            key=lambda r: (r.protocol_text, r.backbone, -np.nan_to_num(r.stats["accuracy"][0], nan=-1.0), r.label)
        )
        sections.append(Section(str(stream), str(scenario), rows))
    return sections


def _tags(raw: Any) -> list[str]:
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return [t for t in raw.split(",") if t]
        return list(value) if isinstance(value, list) else [str(value)]
    return list(raw) if raw is not None else []


# ---- formatting ------------------------------------------------------------------------------------------------


def _fmt(value: float, kind: str) -> str:
    if not np.isfinite(value):
        return "–"
    if kind == "percent":
        return f"{100 * value:.2f}"
    if kind == "bytes":
        return _bytes(value)
    return f"{value:,.0f}"


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _cell_text(stats: tuple[float, float, float], kind: str) -> str:
    mean, low, high = stats
    text = _fmt(mean, kind)
    if np.isfinite(low) and _fmt(low, kind) != _fmt(high, kind):
        text += f" [{_fmt(low, kind)}, {_fmt(high, kind)}]"
    return text


def _metric_text(row: Row, column: str, kind: str) -> str:
    text = _cell_text(row.stats[column], kind)
    if column == "backward_transfer" and row.backward_transfer_approximate and text != "–":
        text = "≈ " + text  # some task was first evaluated later than right after its segment
    return text


def _published(row: Row) -> tuple[str, str]:
    """Text of the published accuracy (and bytes) beside ours, and the difference in points."""
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


def _columns() -> list[str]:
    headings = [heading for _, heading, _ in METRICS]
    return ["method", "backbone", "protocol", "tags", "seeds", *headings, "published", "ours − paper"]


def _row_cells(row: Row) -> list[str]:
    published, difference = _published(row)
    return [
        row.label,
        row.backbone,
        row.protocol_text,
        ", ".join(row.tags),
        str(row.seeds),
        *[_metric_text(row, column, kind) for column, _, kind in METRICS],
        published,
        difference,
    ]


# ---- plots -------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(curves: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return np.array([]), np.array([])
    length = min(len(x) for x, _ in curves)
    return curves[0][0][:length], np.mean([y[:length] for _, y in curves], axis=0)


def plot_section(section: Section, folder: Path, prefix: str) -> None:
    """Accuracy over time (probe of one task, PSP Figures 2 to 5, or the average over tasks seen, SupSup
    Figures 3 to 6), accuracy against bytes (SupSup Figure 2) and one accuracy-matrix heatmap per row."""
    plt = _pyplot()
    probe_rows = [(r, _mean_curve(r.cells["probe"])) for r in section.rows]
    probe_rows = [(r, c) for r, c in probe_rows if len(c[0])]
    if probe_rows:
        figure, axes = plt.subplots(figsize=(7, 4))
        for row, (x, y) in probe_rows:
            axes.plot(x, 100 * y, label=row.label, linewidth=1)
        axes.set(xlabel="training steps", ylabel="accuracy on the probed task (%)", title=section.anchor)
        _finish(plt, figure, axes, folder / f"{prefix}-probe.png")
        section.images["probe"] = f"{prefix}-probe.png"
    curve_rows = [(r, _mean_curve(r.cells["average_over_tasks"])) for r in section.rows]
    curve_rows = [(r, c) for r, c in curve_rows if len(c[0]) > 1]
    if curve_rows:
        figure, axes = plt.subplots(figsize=(7, 4))
        for row, (x, y) in curve_rows:
            axes.plot(x, 100 * y, marker=".", label=row.label, linewidth=1)
        axes.set(xlabel="tasks learned", ylabel="average accuracy over them (%)", title=section.anchor)
        _finish(plt, figure, axes, folder / f"{prefix}-tasks.png")
        section.images["tasks"] = f"{prefix}-tasks.png"
    points = [
        r for r in section.rows if np.isfinite(r.stats["storage_bytes"][0]) and np.isfinite(r.stats["accuracy"][0])
    ]
    if points:
        figure, axes = plt.subplots(figsize=(7, 4))
        for row in points:
            axes.scatter(row.stats["storage_bytes"][0] / 1e6, 100 * row.stats["accuracy"][0], label=row.label)
        published = _published_points(section)
        if published:
            xs, ys, labels = zip(*published, strict=True)
            axes.scatter(xs, ys, marker="*", s=120, color="black", label="published")
        axes.set_xscale("log")
        axes.set(xlabel="bytes to predict every task (MB)", ylabel="final average accuracy (%)", title=section.anchor)
        _finish(plt, figure, axes, folder / f"{prefix}-bytes.png")
        section.images["bytes"] = f"{prefix}-bytes.png"
    for index, row in enumerate(section.rows):
        matrix = row.cells["matrix"].iloc[0]
        if not matrix.size:
            continue
        figure, axes = plt.subplots(figsize=(4, 3.4))
        image = axes.imshow(100 * matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto", interpolation="nearest")
        axes.set(xlabel="task", ylabel="segment (empty rows: not evaluated)", title=_short(row.label, 48))
        figure.colorbar(image, ax=axes, label="accuracy (%)")
        figure.tight_layout()
        name = f"{prefix}-matrix-{index}.png"
        figure.savefig(folder / name, dpi=80)
        plt.close(figure)
        section.images[f"matrix-{index}"] = name


def _published_points(section: Section) -> list[tuple[float, float, str]]:
    """Published (MB, accuracy %) pairs of this stream and scenario, where the paper gives both."""
    pairs: dict[tuple[str, str | None, str], dict[str, float]] = {}
    for reference in REFERENCES:
        if (reference.stream, reference.scenario) == (section.stream, section.scenario):
            key = (reference.label, reference.method, json.dumps(reference.method_settings, sort_keys=True))
            pairs.setdefault(key, {})[reference.metric] = reference.value
    return [(v["storage_bytes"] / 1e6, 100 * v["accuracy"], k[0]) for k, v in pairs.items() if len(v) == 2]


def _finish(plt: Any, figure: Any, axes: Any, path: Path) -> None:
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- documents ---------------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(sections: list[Section], tables: Tables, images: str, title: str) -> str:
    lines = [f"# {title}", "", _summary_line(sections, tables), ""]
    lines += ["Mean over seeds [95% bootstrap interval]; accuracies in %. " + _legend(), ""]
    for section in sections:
        lines += [f"## {section.stream} · {section.scenario}", ""]
        lines.append("| " + " | ".join(_columns()) + " |")
        lines.append("|" + " --- |" * len(_columns()))
        for row in section.rows:
            lines.append("| " + " | ".join(_md_escape(c) for c in _row_cells(row)) + " |")
        lines.append("")
        for kind, name in section.images.items():
            lines.append(f"![{section.anchor} {kind}]({images}/{name})")
        lines.append("")
    lines += _problem_lines(tables, markdown=True)
    return "\n".join(lines) + "\n"


def _legend() -> str:
    return (
        "Rows differ in anything but the seed (method version or settings, backbone, stream or training settings); "
        f"'!' marks a difference from the paper above {100 * DIFFERENCE_FLAG:.0f} points. "
        "Protocol: the input scaling, padding, permutation of the first task and GNu training-loss outputs where they "
        "differ from the harness's defaults; a published number is compared only with rows of its own protocol. "
        "Forgetting: mean over the tasks evaluated before the last evaluation of their best earlier accuracy minus "
        "their final one; backward transfer: final minus first evaluation after training, '≈' where that evaluation "
        "came later than right after the task's segment, empty on continuous streams (segments are not tasks)."
    )


def _summary_line(sections: list[Section], tables: Tables) -> str:
    ok = int((tables.runs["status"] == "ok").sum())
    failed = int((tables.runs["status"] != "ok").sum())
    return (
        f"{ok} cells finished, {failed} failed, {len(tables.unfinished)} not finished, "
        f"{len(tables.unreadable)} unreadable files; {len(sections)} stream x scenario tables."
    )


def _problem_lines(tables: Tables, markdown: bool) -> list[str]:
    lines = []
    failed = tables.runs[tables.runs["status"] != "ok"]
    lines += ["## Failed cells", ""]
    if failed.empty:
        lines += ["None.", ""]
    for run in failed.to_dict("records"):
        error = str(run.get("error") or "").splitlines()[0] if run.get("error") else "(no message)"
        label = f"{run['method']}/{run['stream']}/{run['scenario']}/seed{run.get('seed')}"
        lines.append(f"- `{run['cell_id']}` {_md_escape(label)}: {_md_escape(error)}")
    lines += ["", "## Cells not finished", ""]
    if tables.unfinished.empty:
        lines += ["None.", ""]
    for entry in tables.unfinished.to_dict("records"):
        lines.append(f"- `{entry['cell_id']}` {_md_escape(str(entry.get('label', '')))}")
    if tables.unreadable:
        lines += ["", "## Unreadable result files (their cells are redone by the next `harness run`)", ""]
        lines += [f"- {_md_escape(path)}" for path in tables.unreadable]
    return lines + [""]


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
"""


def render_html(sections: list[Section], tables: Tables, images: str, title: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(_summary_line(sections, tables))}</p>",
        f"<p>Mean over seeds [95% bootstrap interval]; accuracies in %. {e(_legend())}</p>",
        "<nav>" + "".join(f'<a href="#{e(s.anchor)}">{e(s.stream)} · {e(s.scenario)}</a>' for s in sections),
        '<a href="#failed">failed cells</a><a href="#unfinished">not finished</a></nav>',
    ]
    for section in sections:
        parts.append(f'<section id="{e(section.anchor)}"><h2>{e(section.stream)} · {e(section.scenario)}</h2>')
        parts.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in _columns()) + "</tr></thead><tbody>")
        for row in section.rows:
            cells = _row_cells(row)
            rendered = [f"<td>{e(c)}</td>" for c in cells[:-1]]
            flag = ' class="flag"' if cells[-1].endswith("!") else ""
            title_text = f"version {row.version}; tags: {', '.join(row.tags)}"
            rendered[0] = f'<td title="{e(title_text)}">{e(cells[0])}</td>'
            parts.append("<tr>" + "".join(rendered) + f"<td{flag}>{e(cells[-1])}</td></tr>")
        parts.append("</tbody></table>")
        for kind, name in section.images.items():
            css = ' class="matrix"' if kind.startswith("matrix") else ""
            parts.append(f'<img{css} src="{e(images)}/{e(name)}" alt="{e(section.anchor)} {e(kind)}">')
        parts.append("</section>")
    failed = tables.runs[tables.runs["status"] != "ok"]
    parts.append('<section id="failed"><h2>Failed cells</h2>')
    parts.append("<p>None.</p>" if failed.empty else "<ul>")
    for run in failed.to_dict("records"):
        error = str(run.get("error") or "(no message)")
        label = f"{run['method']}/{run['stream']}/{run['scenario']}/seed{run.get('seed')}"
        parts.append(f"<li><code>{e(str(run['cell_id']))}</code> {e(label)}: <pre>{e(error)}</pre></li>")
    parts.append("" if failed.empty else "</ul>")
    parts.append('</section><section id="unfinished"><h2>Cells not finished</h2>')
    if tables.unfinished.empty:
        parts.append("<p>None.</p>")
    else:
        parts.append("<ul>")
        for entry in tables.unfinished.to_dict("records"):
            parts.append(f"<li><code>{e(str(entry['cell_id']))}</code> {e(str(entry.get('label', '')))}</li>")
        parts.append("</ul>")
    if tables.unreadable:
        parts.append("<h2>Unreadable result files</h2><ul>")
        parts += [f"<li>{e(path)}</li>" for path in tables.unreadable]
        parts.append("</ul>")
    parts.append("</section></body></html>")
    return "\n".join(parts) + "\n"


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    images: list[Path]


def write_report(root: Path, out: Path | None = None) -> ReportPaths:
    """Build ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard_files/*.png`` in ``out`` (default: root)."""
    tables = load_tables(root)
    out = Path(out or root)
    images = out / "leaderboard_files"
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
    return ReportPaths(markdown, page, sorted(images.glob("*.png")))
