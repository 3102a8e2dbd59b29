"""Loggers: each finished cell's rows, the same ones written to Parquet, sent on to TensorBoard, W&B or an outside
tool. A logger is a plugin, registered here or by an outside package through the ``harness.loggers`` entry-point
group; ``harness run --logger NAME`` uses it as cells finish and ``harness export NAME OUT`` for finished runs.

A logger never decides what is kept: the Parquet tables are written first, and a logger that fails is reported
and switched off for the rest of the run (its rows are still in Parquet; ``harness export`` writes them later).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.registry import Registry
from results.load import CONFIG_COLUMNS
from results.schema import DIAGNOSTIC_PREFIX


class Logger(Protocol):
    """What ``--logger`` names: built once per run with the output folder, given each finished cell's rows."""

    def log_cell(self, run: Mapping[str, Any], evals: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LoggerEntry:
    factory: Any  # (out: Path) -> Logger
    needs: str = ""  # the module it imports; checked before any work, with the pip line in the error
    install: str = ""


LOGGERS: Registry[LoggerEntry] = Registry("logger", entry_point_group="harness.loggers")


class LoggerError(ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


def check_loggers(names: Iterable[str]) -> None:
    """Refuse, before any work, a logger that is not registered or whose library is not installed."""
    for name in names:
        entry = LOGGERS.get(name)  # an unknown name raises the registry's one-line error
        if entry.needs and importlib.util.find_spec(entry.needs) is None:
            raise LoggerError(f"--logger {name} needs the {entry.needs} package: {entry.install}")


class Loggers:
    """The run's loggers: each finished cell goes to every one; one that raises is reported in one line and left
    out from then on (the cell's rows are in Parquet already, so nothing is lost)."""

    def __init__(self, names: Iterable[str], out: Path, warn: Callable[[str], None]) -> None:
        self.active = {name: LOGGERS.get(name).factory(Path(out)) for name in dict.fromkeys(names)}
        self.warn = warn

    def log_cell(self, run: Mapping[str, Any], evals: Sequence[Mapping[str, Any]]) -> None:
        for name, logger in list(self.active.items()):
            try:
                logger.log_cell(run, evals)
            except Exception as error:
                del self.active[name]
                reason = " ".join(str(error).split())[:200]
                self.warn(
                    f"[harness] logger {name} failed on cell {run['cell_id']} ({type(error).__name__}: {reason}); "
                    f"it is off for the rest of this run, results are unaffected: `harness export {name}` writes them"
                )

    def close(self) -> None:
        for logger in self.active.values():
            logger.close()


# ---- what every logger writes: scalars per step, the config, final numbers ---------------------------------------


def label(run: Mapping[str, Any]) -> str:
    return f"{run['method']}/{run['stream']}/{run['scenario']}/seed{run['seed']}"


def scalars_by_step(evals: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """``{step: {tag: value}}``: each task's accuracy and task inference (``accuracy/task_3``) and their mean over
    the tasks evaluated at that step (``accuracy/average``), the probe, the training loss, storage, and a method's
    diagnostics (``diagnostic/<name>``)."""
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    per_task: dict[tuple[int, str], list[float]] = defaultdict(list)
    for row in evals:
        step, metric, value, task = int(row["step"]), str(row["metric"]), float(row["value"]), int(row["eval_task"])
        if metric in ("accuracy", "task_inference_accuracy"):
            name = "accuracy" if metric == "accuracy" else "task_inference"
            steps[step][f"{name}/task_{task}"] = value
            per_task[(step, name)].append(value)
        elif metric.startswith(DIAGNOSTIC_PREFIX):
            steps[step][f"diagnostic/{metric.removeprefix(DIAGNOSTIC_PREFIX)}"] = value
        else:
            tag = {"train_loss": "train/loss", "probe_accuracy": "probe/accuracy"}.get(metric, metric)
            steps[step][tag.replace("probe_task_inference_accuracy", "probe/task_inference")] = value
    for (step, name), values in per_task.items():
        steps[step][f"{name}/average"] = sum(values) / len(values)
    return dict(sorted(steps.items()))


def hyperparameters(run: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """The cell's identity and every setting of its configs, flat (``training.lr``), as TensorBoard's hparams and
    W&B's config take them: lists and nulls as text."""
    flat: dict[str, Any] = {k: run[k] for k in ("method", "method_version", "stream", "scenario", "seed", "grid")}
    for column in CONFIG_COLUMNS:
        for key, value in _flatten(json.loads(run[column] or "{}"), column).items():
            flat[key] = value if isinstance(value, str | int | float | bool) else json.dumps(value)
    return flat


def _flatten(config: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def final_numbers(steps: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """The last evaluation's average accuracy and task inference: the metrics hparams are compared by."""
    final: dict[str, float] = {}
    for values in steps.values():
        for name in ("accuracy/average", "task_inference/average"):
            if name in values:
                final[f"final/{name.split('/')[0]}"] = values[name]
    return final


def folder_name(run: Mapping[str, Any]) -> str:
    """A cell's folder under a logger's root: readable in TensorBoard's run list, unique by the cell id."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label(run).replace("/", ".")) + f"-{run['cell_id']}"


# ---- TensorBoard -------------------------------------------------------------------------------------------------


class TensorBoardLogger:
    """One event folder per cell, ``OUT/tensorboard/<method.stream.scenario.seedN>-<cell_id>``, with torch's
    SummaryWriter: the scalars of :func:`scalars_by_step` at their steps and the config as hparams (TensorBoard's
    HPARAMS tab) against the final average accuracy. Writing a cell again replaces its folder."""

    def __init__(self, out: Path, root: Path | None = None) -> None:
        self.root = root or Path(out) / "tensorboard"

    def log_cell(self, run: Mapping[str, Any], evals: Sequence[Mapping[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.root / folder_name(run)
        shutil.rmtree(folder, ignore_errors=True)
        steps = scalars_by_step(evals)
        with SummaryWriter(log_dir=str(folder)) as writer:
            for step, values in steps.items():
                for tag, value in values.items():
                    writer.add_scalar(tag, value, step)
            writer.add_text("cell", f"{label(run)} ({run['cell_id']}): {run['status']} {run['error']}".strip())
            final = final_numbers(steps) or {"final/accuracy": float("nan")}
            writer.add_hparams(hyperparameters(run), final, run_name=".")

    def close(self) -> None:
        pass


# ---- Weights & Biases --------------------------------------------------------------------------------------------


class WandbLogger:
    """One W&B run per cell (id: the cell id, name: its label, group: its grid, config: :func:`hyperparameters`),
    its scalars logged at their steps, the final numbers and the run row's costs in the summary. Offline unless
    ``WANDB_MODE`` says otherwise (no account needed: ``wandb sync OUT/wandb/offline-run-*`` uploads later);
    ``WANDB_PROJECT`` names the project (default: the grid)."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(out)

    def log_cell(self, run: Mapping[str, Any], evals: Sequence[Mapping[str, Any]]) -> None:
        import os

        import wandb

        steps = scalars_by_step(evals)
        session = wandb.init(
            project=os.environ.get("WANDB_PROJECT", str(run["grid"])),
            id=str(run["cell_id"]),
            name=label(run),
            group=str(run["grid"]),
            config=hyperparameters(run),
            dir=str(self.dir),
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            reinit="create_new",
            resume="allow",
            settings=wandb.Settings(silent=True),  # the harness's own lines say what happened
        )
        try:
            for step, values in steps.items():
                session.log(dict(values), step=step)
            costs = ("status", "wall_seconds", "train_seconds", "eval_seconds", "samples_per_second", "storage_bytes")
            session.summary.update({**final_numbers(steps), **{k: run[k] for k in costs}})
        finally:
            session.finish()

    def close(self) -> None:
        pass


LOGGERS.register("tensorboard")(LoggerEntry(TensorBoardLogger, needs="tensorboard", install="pip install tensorboard"))
LOGGERS.register("wandb")(LoggerEntry(WandbLogger, needs="wandb", install="pip install wandb"))
