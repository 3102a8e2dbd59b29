"""The report's plots, one set per section: accuracy over time, accuracy against bytes, accuracy matrices.

matplotlib is imported only when a plot is drawn. No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from results.references import REFERENCES
from results.sections import Section

Plot = tuple[Any, Any]  # a matplotlib figure and its axes, drawn but not yet saved
ANNOTATED_MATRIX = 12  # accuracy matrices of at most this many tasks have each cell's number written in it


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


def _plot_curves(
    section: Section, series: str, min_points: int, axis_labels: tuple[str, str], **style: Any
) -> Plot | None:
    """One line per row of its mean curve over seeds of the ``series`` column (rows whose curve has fewer than
    ``min_points`` points are left out); None when no row has one."""
    curves = [(row, _mean_curve(row.cells[series])) for row in section.rows]
    curves = [(row, curve) for row, curve in curves if len(curve[0]) >= min_points]
    if not curves:
        return None
    figure, axes = _pyplot().subplots(figsize=(7, 4))
    for row, (x, y) in curves:
        axes.plot(x, 100 * y, **style, label=row.label, linewidth=1)
    axes.set(xlabel=axis_labels[0], ylabel=axis_labels[1], title=_title(section))
    axes.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))  # steps and task counts are whole
    return figure, axes


def _plot_bytes(section: Section) -> Plot | None:
    """Final accuracy against bytes, ours and the papers' (SupSup Figure 2); None when no row has both."""
    points = [
        r for r in section.rows if np.isfinite(r.stats["storage_bytes"][0]) and np.isfinite(r.stats["accuracy"][0])
    ]
    if not points:
        return None
    figure, axes = _pyplot().subplots(figsize=(7, 4))
    for row in points:
        axes.scatter(row.stats["storage_bytes"][0] / 1e6, 100 * row.stats["accuracy"][0], label=row.label)
    published = _published_points(section)
    if published:
        xs, ys, _ = zip(*published, strict=True)
        axes.scatter(xs, ys, marker="*", s=120, color="black", label="published")
    _readable_log_axis(axes, [r.stats["storage_bytes"][0] / 1e6 for r in points] + [x for x, _, _ in published])
    axes.set(xlabel="bytes to predict every task (MB)", ylabel="final average accuracy (%)", title=_title(section))
    return figure, axes


def _readable_log_axis(axes: Any, values: list[float]) -> None:
    """A log x axis ticked at 1, 2 and 5 times powers of ten, in plain numbers, spanning at least 9x around the
    values so that it always shows several ticks (one tick alone does not say what the scale is)."""
    ticker = _ticker()
    low, high = min(values), max(values)
    axes.set_xscale("log")
    axes.set_xlim(low / 3, high * 3)
    axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def _plot_matrices(section: Section, folder: Path, prefix: str) -> None:
    """One heatmap of the accuracy matrix per row (of its first seed)."""
    plt = _pyplot()
    for index, row in enumerate(section.rows):
        matrix = row.cells["matrix"].iloc[0]
        if not matrix.size:
            continue
        figure, axes = plt.subplots(figsize=(4.4, 3.8))
        image = axes.imshow(100 * matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto", interpolation="nearest")
        title = f"{section.stream} · {section.scenario}\n{_short(row.label, 44)}"
        axes.set(xlabel="task", ylabel="segment (empty rows: not evaluated)", title=title)
        axes.title.set_fontsize(9)
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_locator(_ticker().MaxNLocator(integer=True))
        if max(matrix.shape) <= ANNOTATED_MATRIX:
            _annotate(axes, 100 * matrix)
        figure.colorbar(image, ax=axes, label="accuracy (%)")
        figure.tight_layout()
        name = f"{prefix}-matrix-{index}.png"
        figure.savefig(folder / name, dpi=80)
        plt.close(figure)
        section.images[f"matrix-{index}"] = name


def _annotate(axes: Any, percent: np.ndarray) -> None:
    """Each evaluated cell's accuracy written in it, dark on the light end of the colour map."""
    for (i, j), value in np.ndenumerate(percent):
        if np.isfinite(value):
            colour = "black" if value > 60 else "white"
            axes.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color=colour)


def plot_section(section: Section, folder: Path, prefix: str) -> None:
    """Accuracy over time (probe of one task, PSP Figures 2 to 5, or the average over tasks seen, SupSup
    Figures 3 to 6), accuracy against bytes (SupSup Figure 2) and one accuracy-matrix heatmap per row; each
    image drawn is named in ``section.images``."""
    plots: dict[str, Callable[[], Plot | None]] = {  # drawn one at a time: one figure open at once
        "probe": lambda: _plot_curves(section, "probe", 1, ("training steps", "accuracy on the probed task (%)")),
        "tasks": lambda: _plot_curves(
            section, "average_over_tasks", 2, ("tasks learned", "average accuracy over them (%)"), marker="."
        ),
        "bytes": lambda: _plot_bytes(section),
    }
    for kind, draw in plots.items():
        plot = draw()
        if plot is not None:
            _finish(*plot, folder / f"{prefix}-{kind}.png")
            section.images[kind] = f"{prefix}-{kind}.png"
    _plot_matrices(section, folder, prefix)


def _published_points(section: Section) -> list[tuple[float, float, str]]:
    """Published (MB, accuracy %) pairs of this stream and scenario, where the paper gives both."""
    pairs: dict[tuple[str, str | None, str], dict[str, float]] = {}
    for reference in REFERENCES:
        if (reference.stream, reference.scenario) == (section.stream, section.scenario):
            key = (reference.label, reference.method, json.dumps(reference.method_settings, sort_keys=True))
            pairs.setdefault(key, {})[reference.metric] = reference.value
    return [(v["storage_bytes"] / 1e6, 100 * v["accuracy"], k[0]) for k, v in pairs.items() if len(v) == 2]


def _ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _title(section: Section) -> str:
    return f"{section.stream} · {section.scenario}"


def _finish(figure: Any, axes: Any, path: Path) -> None:
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
