"""Run cells: through Ray (a local instance sized to the machine, or an existing cluster) or in this process.

The driver checks everything it can before the first cell starts (output
folder, data, resources), skips cells already finished in the output folder,
and writes each result the moment it arrives, so an interrupted grid loses at
most the cells in flight and a rerun resumes.

With Ray, every cell is a task with declared resources (CPUs; a fraction of a
GPU for a small model, a whole one otherwise). Tasks run with
``max_calls=0`` so worker processes, their ``import torch`` and their CUDA
context are reused across cells, and ``max_retries`` so a cell whose worker
dies is retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.backbones import is_small
from harness.cache import CACHE_DIR_ENV, cache_dir, cache_dir_problem
from harness.cells import Cell
from harness.checkpoint import checkpoint_path, discard_cell_state
from harness.config import ConfigError
from harness.estimate import estimate_cell
from harness.fusion import DEFAULT_FUSE_MAX, plan_fusion, run_group
from harness.interrupts import interrupt_on_sigterm
from harness.loggers import LoggerError, Loggers, check_loggers
from harness.presets import backbone_name, spec_from_dict
from harness.progress import GridCounts, ProgressBoard, ProgressDisplay, ProgressSink, ProgressView
from harness.registry import UnknownNameError
from harness.runner import DEFAULT_CHECKPOINT_EVERY_S, CellResult, WorkerSettings, failed_result
from results.store import ResultStore
from scenarios import STREAMS
from scenarios.datasets import DataMissingError, prepare_dataset

SMALL_MODEL_GPU_FRACTION = 0.25
WORKER_RETRIES = 2  # a cell whose worker process dies is run again, at most this many times
ADDRESS_TIMEOUT_S = 5.0  # how long the driver waits for a Ray cluster's port to answer before it says so


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunOptions:
    out: Path
    data_dir: str | None = None
    executor: Literal["ray", "inline"] = "ray"
    address: str | None = None  # None: $RAY_ADDRESS, else a new local Ray instance
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpus_per_cell: int = 1
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S  # math.inf: cells save no checkpoints
    loggers: tuple[str, ...] = ()  # harness.loggers names: each finished cell's rows also go there
    progress: Callable[[str], None] = print_progress
    live: bool | None = None  # a table redrawn in place; None: when progress goes to a terminal's stderr
    fuse: str = "auto"  # harness.fusion.FUSE_MODES: train cells that differ only in seed as one batched computation
    fuse_max: int = DEFAULT_FUSE_MAX  # at most this many cells in one fused group


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0  # finished in an earlier run
    done: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def datasets_needed(cells: Sequence[Cell]) -> list[str]:
    return sorted({name for cell in cells for name in STREAMS.get(cell.stream).datasets})


def prepare_data(cells: Sequence[Cell], data_dir: str | None) -> None:
    """Find (or download) and decode every dataset the cells read; raises DataMissingError before any work."""
    for name in datasets_needed(cells):
        try:
            prepare_dataset(name, Path(data_dir) if data_dir else None)
        except DataMissingError:
            raise
        except OSError as error:  # the cache cannot be written (full, read-only, ...)
            where = error.filename or cache_dir()
            raise ConfigError(f"cannot prepare dataset {name}: {where}: {error.strerror or error}") from None


def _ray_address(options: RunOptions) -> str | None:
    return options.address or os.environ.get("RAY_ADDRESS") or None


def check_ray_address(address: str) -> None:
    """Refuse, within ADDRESS_TIMEOUT_S, an address where no Ray cluster can be: ray.init would retry for ever."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as error:
        timed_out = isinstance(error, TimeoutError)
        reason = f"no answer within {ADDRESS_TIMEOUT_S:g}s" if timed_out else (error.strerror or str(error))
        raise ConfigError(
            f"cannot reach a Ray cluster at --address {address!r} ({reason}); "
            "start one there (ray start --head) or leave out --address (and $RAY_ADDRESS) for a local one"
        ) from None


def _memory_limit(device: str) -> tuple[int, str]:
    """(bytes, what they are) a cell may use on this machine: the GPU's memory, else RAM (or the cgroup's limit)."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return props.total_memory, f"GPU memory ({props.name})"
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cgroup.isdigit():
            limit = min(limit, int(cgroup))
    except OSError:
        pass
    return limit, "memory on this machine"


def _check_memory(cells: Sequence[Cell], device: str) -> None:
    from harness.estimate import TRAINING_COPIES, training_bytes

    limit, what = _memory_limit(device)
    seen = set()
    for cell in cells:
        shapes = json.dumps([cell.stream, cell.stream_config, cell.backbone], sort_keys=True)  # what decides the size
        if shapes in seen:
            continue
        seen.add(shapes)
        parameters, needed = training_bytes(cell)
        if needed > limit:
            name = backbone_name(spec_from_dict(cell.backbone))
            raise ConfigError(
                f"cell {cell.label()}: its {name} network has {parameters:,} parameters, at least "
                f"{needed / 1e9:.1f} GB to train ({TRAINING_COPIES} float32 copies: weights, gradients, optimiser "
                f"state), more than the {limit / 1e9:.1f} GB of {what}; choose a smaller backbone"
            )


def check_before_work(cells: Sequence[Cell], options: RunOptions) -> None:
    """Every refusal that needs neither the output folder nor the data: made before either is touched.

    What this machine decides (CPUs, CUDA, memory) is checked here for inline runs and a local Ray instance; an
    existing cluster's resources are checked when the driver joins it (``_resources``), after it is reachable.
    """
    ResultStore(options.out).check_location()
    try:
        check_loggers(options.loggers)
    except (LoggerError, UnknownNameError) as error:
        raise ConfigError(str(error)) from None
    if problem := cache_dir_problem():
        raise ConfigError(f"{problem}; point ${CACHE_DIR_ENV} at a folder")
    address = _ray_address(options) if options.executor == "ray" else None
    if address is not None:
        check_ray_address(address)
        return
    cpus = os.cpu_count() or 1
    if options.cpus_per_cell > cpus:
        raise ConfigError(
            f"--cpus-per-cell {options.cpus_per_cell} is more than this machine's {cpus} CPUs (os.cpu_count())"
        )
    import torch

    cuda = torch.cuda.is_available()
    if options.device == "cuda" and not cuda:
        raise ConfigError(
            "--device cuda asks for a GPU, but torch sees none on this machine (torch.cuda.is_available() is "
            "False); use --device cpu or auto"
        )
    _check_memory(cells, "cuda" if options.device == "cuda" or (options.device == "auto" and cuda) else "cpu")


def progress_display(cells: Sequence[Cell], options: RunOptions, summary: Summary, slots: int) -> ProgressDisplay:
    """The run's live view of ``cells`` (those it has to do), ``slots`` of them at a time."""
    estimates = {}
    for cell in cells:
        try:
            estimates[cell.cell_id] = estimate_cell(cell).seconds
        except Exception:  # an outside method or stream the estimator cannot size: no share of the ETA
            estimates[cell.cell_id] = 0.0
    view = ProgressView({c.cell_id: c.label() for c in cells}, estimates, slots)
    live = options.live
    if live is None:
        live = options.progress is print_progress and sys.stderr.isatty()
    counts = lambda: GridCounts(summary.total, summary.skipped, summary.done, summary.failed)  # noqa: E731
    return ProgressDisplay(view, counts, options.progress, live=live)


def worker_settings(options: RunOptions, device: str) -> WorkerSettings:
    out = str(Path(options.out).resolve())  # a Ray worker's working folder need not be the driver's
    return WorkerSettings(options.data_dir, device, options.cpus_per_cell, git_sha(), out, options.checkpoint_every_s)


def _record(
    store: ResultStore, summary: Summary, cell: Cell, result: CellResult, loggers: Loggers, display: ProgressDisplay
) -> None:
    store.write_cell(result.run, result.evals)
    display.view.cell_finished(cell.cell_id, float(result.run["wall_seconds"]))
    loggers.log_cell(result.run, result.evals)  # after the Parquet files: a logger cannot cost a result
    if not result.keep_checkpoint:  # the cell ran to its end (ok or failed): nothing to resume
        discard_cell_state(store.root, cell.cell_id)
    if result.run["status"] == "ok":
        summary.done += 1
    else:
        summary.failed += 1
        summary.failures.append(f"{cell.label()} ({cell.cell_id}): {result.run['error']}")


def run_grid(cells: Sequence[Cell], options: RunOptions) -> Summary:
    """Run the cells not finished yet in ``options.out``; returns counts. Bad input raises before any work."""
    check_before_work(cells, options)
    address = _ray_address(options) if options.executor == "ray" else None
    joined = _start_ray(address) if address else False  # an existing cluster that refuses us: before any work
    try:
        return _run_grid(cells, options)
    finally:
        if joined:
            import ray

            ray.shutdown()


def _run_grid(cells: Sequence[Cell], options: RunOptions) -> Summary:
    store = ResultStore(options.out)
    store.ensure_writable()
    with store.exclusive():
        store.write_readme()
        prepare_data(cells, options.data_dir)
        plan = [{"cell_id": c.cell_id, "label": c.label(), "grid": c.grid, "tags": list(c.tags)} for c in cells]
        store.write_plan(plan)
        summary = Summary(total=len(cells))
        finished, damaged = store.survey(c.cell_id for c in cells)
        summary.skipped = len(finished)
        todo = [c for c in cells if c.cell_id not in finished]
        for damage in damaged:
            options.progress(f"[harness] unreadable result file {damage}: its cell will be run again")
        for cell_id in finished:  # left by a driver killed between writing a cell's results and tidying up
            discard_cell_state(options.out, cell_id)
        checkpointed = {c.cell_id for c in todo if checkpoint_path(options.out, c.cell_id).exists()}
        todo.sort(key=lambda c: c.cell_id not in checkpointed)  # half-done cells first, the rest in grid order
        resuming = len(checkpointed)
        if resuming:
            options.progress(f"[harness] {resuming} of {len(todo)} cells to run resume from their checkpoints")
        for cell in cells:  # a cell another grid finished here carries this grid's tags too
            recorded = set(str(finished.get(cell.cell_id, {}).get("tags") or "").split(","))
            if cell.cell_id in finished and not set(cell.tags) <= recorded:
                store.merge_tags(cell.cell_id, cell.tags)
        loggers = Loggers(options.loggers, options.out, options.progress)
        try:
            if options.executor == "inline":
                _run_inline(todo, options, store, summary, loggers)
            else:
                _run_ray(todo, options, store, summary, loggers)
        finally:
            loggers.close()
    return summary


def _run_inline(
    cells: Sequence[Cell], options: RunOptions, store: ResultStore, summary: Summary, loggers: Loggers
) -> None:
    device = "cuda" if options.device == "cuda" else "cpu"
    if options.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    display = progress_display(cells, options, summary, slots=1)
    board = ProgressBoard()

    def redraw() -> None:
        display.view.update(board.snapshot())
        display.refresh()

    settings = dataclasses.replace(worker_settings(options, device), progress=ProgressSink(board, redraw))
    try:
        display.refresh(force=True)
        for group in plan_fusion(cells, options.fuse_max, 1, options.fuse, device).groups:
            by_id = {c.cell_id: c for c in group}
            for result in run_group(group, settings):
                _record(store, summary, by_id[result.run["cell_id"]], result, loggers, display)
            display.refresh(force=True)
    finally:
        display.close()


# ---- Ray ---------------------------------------------------------------------------------------------------------

_remote_run_group: Any = None


def _remote() -> Any:
    global _remote_run_group
    if _remote_run_group is None:
        import ray

        _remote_run_group = ray.remote(max_calls=0, max_retries=WORKER_RETRIES)(run_group)
    return _remote_run_group


def _start_ray(address: str | None) -> bool:
    """Connect to a cluster or start a local instance; returns whether we started (and so must stop) it."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **common)
        except Exception as error:
            raise ConfigError(join_error(address, error)) from None
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **common)
    return True


AUTH_FAILURES = ("InvalidAuthToken", "AuthenticationError", "Authentication token")


def join_error(address: str, error: BaseException) -> str:
    """One line for a failed join. Ray 2.60's ``ray start`` turns token authentication on, and a driver without
    ``RAY_AUTH_MODE=token`` is refused with only "Failed to connect": the reason is in the chained errors."""
    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    first = (str(error).splitlines() or [type(error).__name__])[0]
    if any(marker in text for text in chain for marker in AUTH_FAILURES):
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        return (
            f"cannot join the Ray cluster at {address!r}: it refused this driver's authentication token "
            f"(InvalidAuthToken; RAY_AUTH_MODE is {mode}). Set RAY_AUTH_MODE=token here and on every node, with "
            "the cluster's token in ~/.ray/auth_token, $RAY_AUTH_TOKEN_PATH or $RAY_AUTH_TOKEN (README, 'A Ray "
            "cluster of several machines')"
        )
    return f"cannot join the Ray cluster at {address!r}: {first}"


def _largest_node(resource: str) -> float:
    import ray

    return max((node["Resources"].get(resource, 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0)


def _resources(cells: Sequence[Cell], options: RunOptions) -> tuple[str, dict[str, dict[str, float]]]:
    """The device cells run on and each cell's Ray resources; errors at once for what the cluster lacks."""
    gpus = _largest_node("GPU")
    cpus = _largest_node("CPU")
    if options.cpus_per_cell > cpus:
        raise ConfigError(f"--cpus-per-cell {options.cpus_per_cell} is more than any Ray node has ({int(cpus)} CPUs)")
    if options.device == "cuda" and gpus < 1:
        raise ConfigError("--device cuda asks for GPUs, but the Ray cluster has none (use --device cpu or auto)")
    device = "cuda" if options.device == "cuda" or (options.device == "auto" and gpus >= 1) else "cpu"
    per_cell = {}
    for cell in cells:
        resources = {"num_cpus": float(options.cpus_per_cell), "num_gpus": 0.0}
        if device == "cuda":
            small = is_small(spec_from_dict(cell.backbone))
            resources["num_gpus"] = SMALL_MODEL_GPU_FRACTION if small else 1.0
        per_cell[cell.cell_id] = resources
    return device, per_cell


def _cancel_on_cluster(refs: list[Any]) -> None:
    """Stop this run's tasks on a shared cluster, which outlives the driver.

    Not forced: a forced cancel of a task whose reply is already on its way trips a fatal check inside
    Ray 2.60's task manager (seen as "Tried to complete task that was not pending"), killing the driver
    before it can report what it saved.
    """
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # already finished or already gone: nothing left to stop
            pass


def _pull_reports(board: Any, display: ProgressDisplay) -> None:
    """The board's latest reports into the view; a board slow to answer is asked again next time."""
    import ray

    try:
        display.view.update(ray.get(board.snapshot.remote(), timeout=5.0))
    except Exception:  # GetTimeoutError, or the actor died: progress only
        pass


def _run_ray(
    cells: Sequence[Cell], options: RunOptions, store: ResultStore, summary: Summary, loggers: Loggers
) -> None:
    if not cells:
        return
    import ray

    started_here = _start_ray(_ray_address(options))
    previous_handler = None
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, interrupt_on_sigterm):
        previous_handler = signal.signal(signal.SIGTERM, interrupt_on_sigterm)  # ray.init installed its own
    try:
        device, per_cell = _resources(cells, options)
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()  # the workers' reports, on any node
        settings = dataclasses.replace(worker_settings(options, device), progress=ProgressSink(board))
        remote = _remote()
        cpus = sum(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive"))
        slots = max(1, int(cpus // options.cpus_per_cell))
        groups = plan_fusion(cells, options.fuse_max, slots, options.fuse, device).groups
        pending = {remote.options(**per_cell[g[0].cell_id]).remote(g, settings): g for g in groups}
        display = progress_display(cells, options, summary, slots=slots)
        try:
            display.refresh(force=True)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    group = pending.pop(ref)
                    by_id = {c.cell_id: c for c in group}
                    try:
                        results = ray.get(ref)
                    except Exception as error:  # the worker died more often than it was retried
                        results = [failed_result(cell, settings, error) for cell in group]
                    for result in results:
                        _record(store, summary, by_id[result.run["cell_id"]], result, loggers, display)
                _pull_reports(board, display)
                display.refresh(force=bool(ready))
        except BaseException:
            if not started_here:
                _cancel_on_cluster(list(pending))
            raise  # a local instance is stopped below, workers and all: cancelling first races Ray's bookkeeping
        finally:
            display.close()
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if started_here:
            ray.shutdown()
