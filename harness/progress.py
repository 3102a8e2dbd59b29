"""Live progress of a run: running cells report where they are, the driver shows it.

A cell's loop sends a :class:`CellProgress` when it starts, every ``REPORT_EVERY_S`` seconds of training and after
each evaluation, through a :class:`ProgressSink`: the driver's :class:`ProgressBoard` itself for inline runs, a
Ray actor holding one for Ray runs (so workers on other machines report too). The driver draws a table that
redraws in place on a terminal (rich) and writes plain lines otherwise. The grid's ETA comes from the estimator's
figure for every cell not yet done, scaled by how fast the cells here have gone against that figure, so it does
not jump as cells finish.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REPORT_EVERY_S = 2.0  # a training cell reports at most this often (and after every evaluation)
LINE_EVERY_S = 10.0  # plain output: the grid's line at most this often
CELL_LINES_EVERY_S = 60.0  # plain output: one line per running cell at most this often


@dataclass(frozen=True)
class CellProgress:
    cell_id: str
    node: str  # host, and the Ray node's id where there is one
    segment: int  # segments finished
    segments: int
    step: int
    steps: int
    loss: float | None  # the last training batch's
    accuracy: float | None  # the mean over the tasks of the last evaluation
    elapsed_s: float  # since the cell started (its earlier attempts included when resumed)

    @property
    def fraction(self) -> float:
        return self.step / self.steps if self.steps else 0.0


class ProgressBoard:
    """The latest report of each cell; a Ray actor in Ray runs (every method is cheap and never blocks)."""

    def __init__(self) -> None:
        self.latest: dict[str, CellProgress] = {}

    def report(self, update: CellProgress) -> None:
        self.latest[update.cell_id] = update

    def snapshot(self) -> dict[str, CellProgress]:
        return dict(self.latest)


class ProgressSink:
    """What a worker holds: sends a report to the board, never raising (progress is never worth a cell)."""

    def __init__(self, board: Any, on_report: Callable[[], None] | None = None) -> None:
        self.board = board  # a ProgressBoard, or a Ray actor handle of one
        self.on_report = on_report  # inline runs: redraw the driver's table

    def __getstate__(self) -> dict[str, Any]:
        return {"board": self.board, "on_report": None}

    def send(self, update: CellProgress) -> None:
        try:
            if hasattr(self.board.report, "remote"):
                self.board.report.remote(update)
            else:
                self.board.report(update)
                if self.on_report is not None:
                    self.on_report()
        except Exception:  # the driver is gone or busy: the cell goes on
            pass


def node_name() -> str:
    from harness.runner import ray_node_id

    node = ray_node_id()
    return f"{socket.gethostname()}:{node[:6]}" if node else socket.gethostname()


# ---- the driver's view ---------------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class GridCounts:
    total: int
    skipped: int
    done: int
    failed: int

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed


class ProgressView:
    """The grid's counts and ETA, and one row per running cell, from the board's reports and the estimates."""

    def __init__(self, labels: Mapping[str, str], estimates: Mapping[str, float], slots: int) -> None:
        self.labels = dict(labels)  # cell_id -> label, for the cells this run has to do
        self.estimates = dict(estimates)  # cell_id -> estimated seconds on the reference machine
        self.slots = max(1, slots)
        self.finished: dict[str, float] = {}  # cell_id -> its wall seconds
        self.reports: dict[str, CellProgress] = {}
        self.started = time.monotonic()

    def update(self, reports: Mapping[str, CellProgress]) -> None:
        self.reports.update({k: v for k, v in reports.items() if k in self.labels and k not in self.finished})

    def cell_finished(self, cell_id: str, wall_seconds: float) -> None:
        self.finished[cell_id] = wall_seconds
        self.reports.pop(cell_id, None)

    @property
    def running(self) -> list[CellProgress]:
        return [r for cell_id, r in self.reports.items() if cell_id not in self.finished]

    def speed_ratio(self) -> float:
        """Seconds here per estimated second, over what has run so far (1 until anything has)."""
        spent = sum(self.finished.values()) + sum(r.elapsed_s for r in self.running)
        expected = sum(self.estimates.get(c, 0.0) for c in self.finished)
        expected += sum(self.estimates.get(r.cell_id, 0.0) * r.fraction for r in self.running)
        return spent / expected if expected > 0 and spent > 0 else 1.0

    def eta_seconds(self) -> float:
        left = sum(e for c, e in self.estimates.items() if c not in self.finished and c not in self.reports)
        left += sum(self.estimates.get(r.cell_id, 0.0) * (1 - r.fraction) for r in self.running)
        return self.speed_ratio() * left / self.slots

    @staticmethod
    def cell_eta(report: CellProgress) -> float | None:
        if report.step <= 0:
            return None
        return report.elapsed_s * (report.steps - report.step) / report.step

    def cell_row(self, report: CellProgress) -> list[str]:
        return [
            self.labels.get(report.cell_id, report.cell_id),
            report.node,
            f"{report.segment}/{report.segments}",
            f"{report.step:,}/{report.steps:,}",
            "–" if report.loss is None else f"{report.loss:.4g}",
            "–" if report.accuracy is None else f"{100 * report.accuracy:.1f} %",
            duration(self.cell_eta(report)),
        ]

    def counts_line(self, counts: GridCounts) -> str:
        running = len(self.running)
        finished = counts.done + counts.failed + counts.skipped
        return (
            f"[harness] {finished}/{counts.total} cells: {counts.done} done, {counts.failed} failed, "
            f"{counts.skipped} skipped, {running} running, {max(counts.remaining - running, 0)} waiting; "
            f"elapsed {duration(time.monotonic() - self.started)}, eta {duration(self.eta_seconds())}"
        )


HEADINGS = ("cell", "node", "segment", "step", "loss", "accuracy", "cell eta")


class ProgressDisplay:
    """A rich table redrawn in place on a terminal; plain lines to ``emit`` otherwise."""

    def __init__(
        self,
        view: ProgressView,
        counts: Callable[[], GridCounts],
        emit: Callable[[str], None],
        live: bool | None = None,
    ) -> None:
        self.view, self.counts, self.emit = view, counts, emit
        self.live_display: Any = None
        self.last_line = self.last_cells = self.last_counts_at = 0.0
        self.last_counts = ""
        if live if live is not None else sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live_display = Live(self._table(), console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live_display.start()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=self.view.counts_line(self.counts()).removeprefix("[harness] "), title_justify="left")
        for heading in HEADINGS:
            table.add_column(heading, justify="left" if heading in ("cell", "node") else "right", no_wrap=True)
        for report in sorted(self.view.running, key=lambda r: self.view.labels.get(r.cell_id, "")):
            table.add_row(*self.view.cell_row(report))
        return table

    def refresh(self, force: bool = False) -> None:
        if self.live_display is not None:
            self.live_display.update(self._table())
            return
        now = time.monotonic()
        if force or now - self.last_line >= LINE_EVERY_S:
            self._emit_counts()
        if self.view.running and now - self.last_cells >= CELL_LINES_EVERY_S:
            self.last_cells = now
            for report in self.view.running:
                self.emit("[harness]   " + "  ".join(f"{h} {v}" for h, v in zip(HEADINGS, self.view.cell_row(report))))

    def close(self) -> None:
        if self.live_display is not None:
            self.live_display.update(self._table())
            self.live_display.stop()
        else:
            self._emit_counts()

    def _emit_counts(self) -> None:
        """The grid's line, unless only the clock has moved since the last one."""
        self.last_line = time.monotonic()
        line = self.view.counts_line(self.counts())
        if line.split("; elapsed")[0] != self.last_counts or time.monotonic() - self.last_counts_at >= LINE_EVERY_S:
            self.emit(line)
            self.last_counts, self.last_counts_at = line.split("; elapsed")[0], time.monotonic()
