"""``harness run`` and ``harness list``.

Exit status: 0 every cell finished; 1 some cells failed (all were recorded);
2 bad input, reported in one line before any work; 130 interrupted (finished
cells are saved; rerun the same command to resume), from the first moment:
this module imports only the standard library before ``main`` handles Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.fusion import FusionPlan

EXIT_OK, EXIT_FAILED_CELLS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# What each command imports (torch, pyarrow, ...): imported first, where Ctrl-C ends the process at once
MODULES = {
    "run": ("harness.grid", "harness.scheduler", "harness.estimate", "results.report", "scenarios.datasets"),
    "report": ("results.report", "results.store", "scenarios.datasets"),
    "list": ("harness.grid_files",),
    "export": ("harness.loggers", "results.load"),  # `list methods` and `list streams` import the rest as they need it
}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


class _CsvList(argparse.Action):
    """A comma-separated list that a repeated flag extends (``--only a --only b`` is ``--only a,b``)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, flag: Any = None
    ) -> None:
        setattr(namespace, self.dest, (*getattr(namespace, self.dest), *_csv(values)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="A benchmark harness for continual learning.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a grid of cells (method x stream x scenario x backbone x seed)")
    run.add_argument("--grid", required=True, help="a grid name (see `harness list grids`) or a YAML file")
    run.add_argument("--methods", action=_CsvList, default=(), help="only these methods (comma-separated; repeatable)")
    run.add_argument(
        "--method",
        dest="added_methods",
        action="append",
        default=[],
        metavar="NAME[:K=V,...]",
        help="add this method (with these settings) to every experiment, where it supports the scenario; repeatable",
    )
    run.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every experiment: training.KEY, seeds, backbone, methods.NAME.KEY or "
        "streams.NAME.KEY (VALUE read as YAML); repeatable",
    )
    run.add_argument("--streams", action=_CsvList, default=(), help="only these streams (comma-separated; repeatable)")
    run.add_argument(
        "--scenarios", action=_CsvList, default=(), help="only these scenarios (comma-separated; repeatable)"
    )
    run.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 instead of the grid's")
    run.add_argument("--scale", type=float, default=1.0, help="multiply every step budget by F (a quick look)")
    run.add_argument(
        "--only",
        action=_CsvList,
        default=(),
        help="only experiments with these tags or tag prefixes (comma-separated; repeatable)",
    )
    run.add_argument("--max-tasks", type=int, default=None, help="at most N tasks per stream (a quick look)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<grid>)")
    run.add_argument("--data-dir", default=None, help="datasets in torchvision's layout (default: $HARNESS_DATA_DIR)")
    run.add_argument("--address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else local)")
    run.add_argument("--executor", choices=("ray", "inline"), default="ray", help="inline: one cell at a time here")
    run.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA where the node has a GPU"
    )
    run.add_argument("--cpus-per-cell", type=int, default=1, help="CPUs (and torch threads) per cell")
    run.add_argument(
        "--fuse",
        choices=("auto", "on", "off"),
        default="auto",
        help="on: cells that differ only in seed train as one batched computation, each still its own cell (the "
        "dry run shows the groups); auto: on where it was measured to pay on the device; off: every cell alone",
    )
    run.add_argument("--fuse-max", type=int, default=None, metavar="K", help="at most K cells per fused group (8)")
    run.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="save a running cell's whole state this often, so a killed cell resumes there (0: never; default 300)",
    )
    run.add_argument(
        "--logger",
        dest="loggers",
        action=_CsvList,
        default=(),
        metavar="NAME",
        help="also send each finished cell's rows to this logger: tensorboard (OUT/tensorboard), wandb (offline "
        "unless $WANDB_MODE says otherwise), or an outside one (entry-point group harness.loggers); repeatable",
    )
    run.add_argument("--dry-run", action="store_true", help="validate and list the cells; train nothing")

    report = commands.add_parser("report", help="build the leaderboard (Markdown and HTML) from an output folder")
    report.add_argument("runs_dir", type=Path, help="an output folder of `harness run` (e.g. runs/smoke)")
    report.add_argument("--out", type=Path, default=None, help="where to write it (default: RUNS_DIR)")

    export = commands.add_parser("export", help="write the finished cells of an output folder to a logger")
    export.add_argument("logger", help="a logger's name: tensorboard, wandb, or an outside one")
    export.add_argument("runs_dir", type=Path, help="an output folder of `harness run` (e.g. runs/smoke)")
    export.add_argument("--to", type=Path, default=None, help="where the logger writes (default: RUNS_DIR)")

    show = commands.add_parser("list", help="list methods, streams, scenarios or grids")
    show.add_argument("what", choices=("methods", "streams", "scenarios", "grids"))
    return parser


def _list(what: str) -> None:
    from harness.config import describe_config

    if what == "methods":
        from methods import METHODS

        for name in METHODS.names():
            cls = METHODS.get(name)
            print(f"{name} (version {cls.version}; scenarios {', '.join(sorted(cls.scenarios))})")
            fusion = "fusable" if cls.fusion_unavailable is None else f"runs alone: {cls.fusion_unavailable}"
            print(f"    fused cells: {fusion}")
            for line in describe_config(cls.Config):
                print(f"    {line}")
    elif what == "streams":
        from scenarios import STREAMS

        for name in STREAMS.names():
            cls = STREAMS.get(name)
            data = f"; reads {', '.join(cls.datasets)}" if cls.datasets else ""
            print(f"{name}{data}")
            for line in describe_config(cls.Config):
                print(f"    {line}")
    elif what == "scenarios":
        from scenarios import RULES

        for scenario, rules in RULES.items():
            print(f"{scenario.value}: {rules.description}")
    else:
        from harness.grid_files import grid_names, load_grid_file, locate_grid

        for name in grid_names():
            data = load_grid_file(locate_grid(name))
            print(f"{name}: {' '.join(str(data.get('description', '')).split())}")


def _dry_run(
    cells: Sequence[Cell],
    data_dir: Path | None,
    out: Path,
    fusion: tuple[str, int, int, str] = ("off", 1, 1, "cpu"),
) -> None:
    """The cells with the data each reads and an estimate of its compute; then totals per tag and dataset."""
    from harness.estimate import REFERENCE_DEVICE, estimate_cell, fused_seconds
    from harness.fusion import plan_fusion
    from harness.scheduler import datasets_needed
    from results.protocol import describe_protocol, protocol_of
    from scenarios import STREAMS
    from scenarios.datasets import dataset_status

    status = {name: dataset_status(name, data_dir) for name in datasets_needed(cells)}
    hours_by_tag: dict[str, float] = {}
    cells_by_tag: dict[str, int] = {}
    total = 0.0
    unmeasured: set[str] = set()
    mode, fuse_max, slots, device = fusion
    plan = plan_fusion(cells, fuse_max, slots, mode, device)
    group_of = {c.cell_id: (i, len(g)) for i, g in enumerate(plan.groups) for c in g}
    alone_total = 0.0
    for cell in cells:
        estimate = estimate_cell(cell)
        group, size = group_of[cell.cell_id]
        alone_total += estimate.seconds / 3600
        hours = fused_seconds(estimate, size) / 3600
        total += hours
        if not estimate.speed_measured:
            unmeasured.add(f"{cell.method} on {estimate.backbone_kind}")
        needs = STREAMS.get(cell.stream).datasets
        data = ",".join(f"{n}({'present' if status[n][0] else 'missing'})" for n in needs) or "none"
        protocol = describe_protocol(protocol_of({"stream_config": cell.stream_config, "training": cell.training}))
        fused = f"  fused=group{group + 1}x{size}" if size > 1 else ""
        print(
            f"{cell.cell_id}  {cell.label()}  tags={','.join(cell.tags)}  protocol={protocol}  data={data}  "
            f"eval={duration(estimate.eval_seconds)}  est={duration(hours * 3600)}{fused}"
        )
        tag = cell.tags[0] if cell.tags else ""
        hours_by_tag[tag] = hours_by_tag.get(tag, 0.0) + hours
        cells_by_tag[tag] = cells_by_tag.get(tag, 0) + 1
    print(f"\nby tag (estimated device time on {REFERENCE_DEVICE}):")
    for tag, hours in hours_by_tag.items():
        print(f"  {tag or '(untagged)'}: {plural(cells_by_tag[tag], 'cell')}, {duration(hours * 3600)}")
    print("data:")
    for name, (present, where) in status.items():
        print(f"  {name}: {'present in ' + where if present else where}")
    if unmeasured:
        print(f"speed not measured, estimated at the plain loop's: {', '.join(sorted(unmeasured))}")
    _print_fusion(plan, mode, fuse_max, slots, alone_total * 3600, total * 3600)
    about = f"about {duration(total * 3600)} of device time on {REFERENCE_DEVICE}"
    print(f"{plural(len(cells), 'cell')}; {about}; output: {out}")


def _print_fusion(plan: FusionPlan, mode: str, fuse_max: int, slots: int, alone: float, fused: float) -> None:
    """The fused groups and the cells that run alone, with the reasons (harness/fusion.py)."""
    if mode == "off":
        print("fusion: off (--fuse off): every cell alone")
        return
    sizes = [len(g) for g in plan.groups if len(g) > 1]
    print(
        f"fusion (--fuse {mode}, --fuse-max {fuse_max}, {plural(slots, 'cell')} at a time on the reference machine): "
        f"{plural(len(sizes), 'fused group')} "
        f"of {sum(sizes)} cells (sizes {', '.join(map(str, sorted(set(sizes)))) or '-'}); "
        f"{duration(fused)} estimated against {duration(alone)} alone"
    )
    reasons: dict[str, int] = {}
    for reason in plan.alone.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        print(f"  alone: {plural(count, 'cell')}: {reason}")
    lonely = sum(1 for g in plan.groups if len(g) == 1 and g[0].cell_id not in plan.alone)
    if lonely:
        print(f"  alone: {plural(lonely, 'cell')}: no other cell differs from it only in seed")


def _run(args: argparse.Namespace) -> int:
    from harness.config import ConfigError
    from harness.fusion import DEFAULT_FUSE_MAX
    from harness.grid import Filters, expand_grid
    from harness.loggers import check_loggers
    from harness.overrides import parse_added_method, parse_override
    from harness.scheduler import RunOptions, run_grid

    if args.cpus_per_cell < 1:
        raise ConfigError(f"--cpus-per-cell must be >= 1, got {args.cpus_per_cell}")
    fuse_max = DEFAULT_FUSE_MAX if args.fuse_max is None else args.fuse_max
    if fuse_max < 1:
        raise ConfigError(f"--fuse-max must be >= 1 (1: no fusion), got {args.fuse_max}")
    if not (math.isfinite(args.checkpoint_every) and args.checkpoint_every >= 0):
        raise ConfigError(f"--checkpoint-every must be seconds >= 0 (0: never), got {args.checkpoint_every}")
    filters = Filters(
        args.methods,
        args.streams,
        args.scenarios,
        args.seeds,
        args.scale,
        args.only,
        args.max_tasks,
        settings=tuple(parse_override(text) for text in args.settings),
        added_methods=tuple(parse_added_method(text) for text in args.added_methods),
    )
    cells = expand_grid(args.grid, filters)
    check_loggers(args.loggers)
    grid_name = cells[0].grid
    out = args.out or Path("runs") / grid_name
    data_dir = args.data_dir or os.environ.get("HARNESS_DATA_DIR")
    if args.dry_run:
        changes = [f"--set {text}" for text in args.settings] + [f"--method {text}" for text in args.added_methods]
        if changes:
            print(f"the grid {grid_name} with {', '.join(changes)}")
        slots = 1 if args.executor == "inline" else max(1, (os.cpu_count() or 1) // args.cpus_per_cell)
        import torch

        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        fusion = (args.fuse, fuse_max, slots, "cuda" if cuda else "cpu")
        _dry_run(cells, Path(data_dir) if data_dir else None, out, fusion)
        return EXIT_OK
    options = RunOptions(
        out=out,
        data_dir=data_dir,
        executor=args.executor,
        address=args.address,
        device=args.device,
        cpus_per_cell=args.cpus_per_cell,
        checkpoint_every_s=args.checkpoint_every or math.inf,
        loggers=args.loggers,
        fuse=args.fuse,
        fuse_max=fuse_max,
    )
    summary = run_grid(cells, options)
    print(
        f"{plural(summary.total, 'cell')}: {summary.done} done, {summary.failed} failed, "
        f"{summary.skipped} already finished; results in {out}"
    )
    for failure in summary.failures:
        print(f"  failed: {failure}", file=sys.stderr)
    return EXIT_FAILED_CELLS if summary.failed else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    """Every cell of an output folder (finished or failed) through a logger, as ``--logger`` would have sent it."""
    from harness.loggers import Loggers, check_loggers
    from results.load import load_tables

    check_loggers([args.logger])
    tables = load_tables(args.runs_dir)
    to = args.to or args.runs_dir
    loggers = Loggers([args.logger], to, lambda line: print(line, file=sys.stderr))
    by_cell = dict(tuple(tables.evals.groupby("cell_id"))) if len(tables.evals) else {}
    exported = 0
    for run in tables.runs.to_dict("records"):
        evals = by_cell.get(run["cell_id"])
        loggers.log_cell(run, [] if evals is None else evals.to_dict("records"))
        exported += bool(loggers.active)
    loggers.close()
    print(f"{plural(exported, 'cell')} of {args.runs_dir} written by the {args.logger} logger into {to}")
    return EXIT_OK if loggers.active or not len(tables.runs) else EXIT_FAILED_CELLS


def _report(args: argparse.Namespace) -> int:
    from results.report import write_report

    paths = write_report(args.runs_dir, args.out)
    images = paths.html.parent / "leaderboard_files"
    print(f"wrote {paths.markdown}, {paths.html} and {len(paths.images)} images in {images}")
    return EXIT_OK


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "list":
            _list(args.what)
            code = EXIT_OK
        elif args.command == "report":
            code = _report(args)
        elif args.command == "export":
            code = _export(args)
        else:
            code = _run(args)
        sys.stdout.flush()  # here, not at exit, so that a reader gone away (`| head -1`) is caught below
        return code
    except Exception as error:
        if not isinstance(error, _bad_input_errors()):
            raise
        print(f"harness: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _bad_input_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's input, not a bug: one line and exit 2. Imported only when one is raised,
    so that `harness list grids` does not import the datasets (and torch) to be ready for them."""
    from harness.config import ConfigError
    from harness.loggers import LoggerError
    from harness.registry import UnknownNameError
    from results.report import ReportError
    from results.store import OutputError
    from scenarios.datasets import DataCorruptError, DataMissingError

    return ConfigError, UnknownNameError, DataMissingError, DataCorruptError, OutputError, ReportError, LoggerError


def _stdout_to_devnull() -> None:
    """After a broken pipe: what is still buffered for stdout goes nowhere, so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (replaced, closed)
        pass


INTERRUPTED_MESSAGE = "harness: interrupted; finished cells are saved, rerun the same command to resume"


def _import_stopping_at_interrupts(modules: Sequence[str]) -> None:
    """Import the modules; Ctrl-C meanwhile ends the process at once, with its one line and status 130.

    A KeyboardInterrupt in the middle of an import (numpy, torch) can leave a module half-made and end in an
    unrelated traceback; and nothing has started yet (no file, no Ray), so there is nothing to save or stop.
    """

    def stop(signum: int, frame: object) -> None:
        os.write(2, f"{INTERRUPTED_MESSAGE}\n".encode())
        os._exit(EXIT_INTERRUPTED)

    handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when ignored (a background job)
    if handled:
        signal.signal(signal.SIGINT, stop)
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        if handled:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    """An estimate as a person reads it: ``0.4 s``, ``40 s``, ``12 min``, ``3.8 h``, ``41 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        _import_stopping_at_interrupts(MODULES[args.command])
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            from harness.interrupts import interrupt_on_sigterm

            signal.signal(signal.SIGTERM, interrupt_on_sigterm)
        return _command(args)
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout stopped reading (`harness list grids | head -1`): not an error
        _stdout_to_devnull()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
