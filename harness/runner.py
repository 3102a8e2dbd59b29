"""The one training loop: run a cell in this process and return its result rows.

``run_cell`` never raises for a failing cell: the error becomes the cell's
status, and the evaluations made before it are kept. No host sync happens
inside the training step; the loop syncs at evaluation points only, which is
also where it checks that the loss is still finite.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor, nn

import harness
from harness.backbones import BackboneSpec, backbone_factory
from harness.cells import Cell
from harness.checkpoint import Checkpoints, Position, partial_path, random_states, restore_random_states
from harness.config import parse_config
from harness.evaluation import Evaluator, Recorder
from harness.meters import Clock, PeakMemory
from harness.progress import REPORT_EVERY_S, CellProgress, ProgressSink, node_name
from harness.training import TrainingConfig
from methods import METHODS
from methods.base import BuildContext, LabelSpace, Method, SegmentData, TrainableParams, trainable
from results.rows import RunRow, as_record
from results.schema import DIAGNOSTIC_PREFIX, EVALS
from results.store import write_table_atomic
from scenarios import RULES, STREAMS, Scenario
from scenarios.streams import Segment, Stream
from scenarios.taxonomy import Rules

DEFAULT_CHECKPOINT_EVERY_S = 300.0
PARTIAL_EVERY_S = 10.0  # partial results after an evaluation, at most this often (each write is of all rows so far)


@dataclass(frozen=True)
class WorkerSettings:
    """What the driver tells a worker beyond the cell."""

    data_dir: str | None
    device: str  # "cpu", "cuda"
    threads: int
    git_sha: str = ""
    out: str | None = None  # the output folder: checkpoints and partial results go there (None: neither)
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S  # 0: at every chance (tests); math.inf: never save
    progress: ProgressSink | None = None  # where the cell reports how far it is (None: nowhere)


@dataclass
class CellResult:
    run: dict[str, Any]
    evals: list[dict[str, Any]]
    keep_checkpoint: bool = False  # the worker died: its checkpoint, if any, is where a rerun resumes


def make_optimizer(params: TrainableParams, config: TrainingConfig) -> torch.optim.Optimizer:
    """The configured optimiser over parameters or parameter groups (a group's own ``lr`` wins)."""
    params = list(params) or [nn.Parameter(torch.zeros(()))]  # a method may train nothing for a while
    decay = config.weight_decay
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=decay)


def lr_factor(step: int, steps: int, config: TrainingConfig) -> float:
    """The multiplier of every group's learning rate at a step (0-based) of a segment of ``steps`` steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - config.warmup_steps) / max(1, steps - config.warmup_steps)))


def scale_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's rate to its base rate (its first, or its own ``lr``) times ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * factor


def build_stream(cell: Cell, device: torch.device, data_dir: str | None) -> Stream:
    cls = STREAMS.get(cell.stream)
    config = parse_config(cls.Config, cell.stream_config, f"stream {cell.stream}")
    return cls(config, seed=cell.seed, device=device, data_dir=Path(data_dir) if data_dir else None)


def build_method(cell: Cell) -> Method:
    cls = METHODS.get(cell.method)
    return cls(parse_config(cls.Config, cell.method_config, f"method {cell.method}"))


class Loop:
    """The state of one cell's training; methods never see it."""

    def __init__(self, cell: Cell, settings: WorkerSettings) -> None:
        self.cell = cell
        self.device = torch.device(settings.device)
        self.training = parse_config(TrainingConfig, cell.training, "training")
        self.rules: Rules = RULES[Scenario(cell.scenario)]
        self.recorder = Recorder(cell.cell_id)
        self.step = 0
        self.samples = 0
        self.seen: list[int] = []
        self.last_loss: Tensor | None = None
        self.clock = Clock(self.device)
        self.memory = PeakMemory(self.device)
        self.resumes = 0
        self.partial_written = time.monotonic()
        self.progress = settings.progress
        self.reported_at = 0.0
        self.last_accuracy: float | None = None
        self.extent: tuple[int, int] | None = None  # (segments, steps) of the whole cell, for progress reports
        self.node = node_name() if self.progress is not None else ""
        self.start: Position | None = None  # where training begins: None from the start, else a checkpoint's place
        self.checkpoints: Checkpoints | None = None
        if settings.out is not None:
            self.checkpoints = Checkpoints(Path(settings.out), cell.cell_id, settings.checkpoint_every_s)
        torch.manual_seed(cell.seed)
        self.stream = build_stream(cell, self.device, settings.data_dir)
        self.labels = LabelSpace(self.stream.num_tasks, self.stream.classes_per_task, self.rules.shared_labels)
        saved = self.checkpoints.load() if self.checkpoints else None
        if saved is not None:
            self.restore(saved)
            return
        self.method = build_method(cell)
        spec = parse_config(BackboneSpec, cell.backbone, "backbone")
        context = BuildContext(
            scenario=cell.scenario,
            label_space=self.labels,
            make_backbone=backbone_factory(spec, self.stream.input_shape),
            input_shape=self.stream.input_shape,
            device=self.device,
            seed=cell.seed,
            loss_outputs=self.training.loss_outputs,
        )
        self.module = self.method.build(context).to(self.device)
        self.module.train()
        self.optimizer = make_optimizer(trainable(self.module), self.training)
        self.evaluator = Evaluator(self.method, self.stream, self.labels, self.rules, self.training.eval_batch_size)
        self.clock.end_setup()

    def checkpoint(self, position: Position) -> None:
        """Save the whole state of training at ``position`` and write the rows so far as partial results."""
        assert self.checkpoints is not None
        self.clock.sync()
        wall, setup, evaluation = self.clock.wall(), self.clock.setup_seconds, self.clock.eval_seconds
        self.checkpoints.save(
            {
                "position": (position.segment, position.steps_done),
                "trained": {"method": self.method, "module": self.module, "optimizer": self.optimizer},
                "stream": self.stream.sampling_state(),
                "random": random_states(),
                "counters": {"step": self.step, "samples": self.samples, "seen": self.seen, "loss": self.last_loss},
                "rows": self.rows,
                "clock": (wall, setup, evaluation),
                "resumes": self.resumes,
            }
        )
        self.write_partial()

    def write_partial(self) -> None:
        """The rows so far, for the progress display and the report (never a finished cell's files)."""
        assert self.checkpoints is not None
        path = partial_path(self.checkpoints.out, self.cell.cell_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table_atomic(pa.Table.from_pylist(self.rows, schema=EVALS), path)
        self.partial_written = time.monotonic()

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up a checkpoint's state; the stream was built afresh from the config and seed."""
        trained = saved["trained"]
        self.method, self.module, self.optimizer = trained["method"], trained["module"], trained["optimizer"]
        self.stream.restore_sampling_state(saved["stream"])
        counters = saved["counters"]
        self.step, self.samples, self.seen, self.last_loss = (
            counters["step"],
            counters["samples"],
            counters["seen"],
            counters["loss"],
        )
        self.recorder.rows.extend(saved["rows"])
        self.evaluator = Evaluator(self.method, self.stream, self.labels, self.rules, self.training.eval_batch_size)
        self.resumes = saved["resumes"] + 1
        self.start = Position(*saved["position"])
        self.clock.end_setup()
        self.clock.carry(*saved["clock"])
        restore_random_states(saved["random"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.recorder.rows

    def _restart_optimizer(self, params: TrainableParams | None) -> None:
        if params is not None:
            self.optimizer = make_optimizer(params, self.training)

    def _targets(self, local: Tensor, task: int) -> Tensor:
        return self.evaluator.targets(local, task)

    def record(self, segment: int, eval_task: int, metric: str, value: float, n: int) -> None:
        self.recorder.record(self.step, segment, len(self.seen), eval_task, metric, value, n)

    def _check_loss(self) -> None:
        if self.last_loss is not None and not torch.isfinite(self.last_loss).item():
            raise FloatingPointError(f"the training loss became {self.last_loss.item()} by step {self.step}")

    def probe(self, segment: Segment) -> None:
        task = self.training.probe_task
        self.clock.begin_eval()
        self.module.eval()
        self._check_loss()
        limit = self.training.probe_samples or None
        for metric, (value, n) in self.evaluator.measure(task, limit).items():
            self.record(segment.index, task, f"probe_{metric}", value, n)
        self.module.train()
        self.clock.end_eval()

    def evaluate_seen(self, segment: Segment) -> None:
        self.clock.begin_eval()
        self.module.eval()
        self._check_loss()
        if self.last_loss is not None:
            self.record(segment.index, segment.task, "train_loss", self.last_loss.item(), self.training.batch_size)
        limit = self.training.eval_samples or None
        accuracies = []
        for task, measures in self.evaluator.measure_all(self.seen, limit).items():
            for metric, (value, n) in measures.items():
                self.record(segment.index, task, metric, value, n)
            if "accuracy" in measures:
                accuracies.append(measures["accuracy"][0])
        self.last_accuracy = sum(accuracies) / len(accuracies) if accuracies else self.last_accuracy
        self.record(segment.index, -1, "storage_bytes", sum(self.method.storage().values()), 0)
        for name, value in self.method.diagnostics().items():
            self.record(segment.index, -1, DIAGNOSTIC_PREFIX + name, value, 0)
        self.module.train()
        self.clock.end_eval()

    def begin_training(self, segment: Segment, steps_done: int | None) -> int | None:
        """What comes before a segment's steps (none of it when resuming ``steps_done`` steps in); returns the task
        the method may see (None where the scenario hides it)."""
        visible = segment.task if self.rules.task_in_training else None
        if steps_done is None:
            if segment.task not in self.seen:
                self.seen.append(segment.task)
            if self.rules.boundaries_in_training:
                self._restart_optimizer(self.method.begin_segment(visible, self.step))
        return visible

    def draw_batch(self, segment: Segment) -> tuple[Tensor, Tensor]:
        """The next training batch of the segment, labels in the label space."""
        x, local = self.stream.train_batch(segment, self.step, self.training.batch_size)
        return x, self._targets(local, segment.task)

    def schedule(self, optimizer: torch.optim.Optimizer, index: int, steps: int) -> None:
        """The learning rates of step ``index`` of a segment of ``steps`` (nothing to do at a constant rate)."""
        if self.training.lr_schedule != "constant" or self.training.warmup_steps > 0:
            scale_learning_rates(optimizer, lr_factor(index, steps, self.training))

    def finish_step(self, segment: Segment, loss: Tensor, batch: int) -> None:
        """After the optimiser step: the method's after_step, then counting, progress and probes."""
        self._restart_optimizer(self.method.after_step(self.step))
        self.count_step(segment, loss, batch)

    def end_training(self, segment: Segment, visible: int | None) -> None:
        """The method's end of segment, with a replay sampler of the segment's task (where boundaries are known)."""
        if not self.rules.boundaries_in_training:
            return
        task = segment.task

        def replay(n: int) -> tuple[Tensor, Tensor]:
            x, local = self.stream.sample_train(task, n)
            return x, self._targets(local, task)

        self.method.end_segment(visible, replay)

    def train_segment(self, segment: Segment, steps_done: int | None = None) -> None:
        """Train one segment, or the rest of one ``steps_done`` steps in (a resumed checkpoint's)."""
        visible = self.begin_training(segment, steps_done)
        if self.method.runs_own_loop:
            if steps_done is not None:
                raise RuntimeError(f"method {self.cell.method} runs its own loop: it cannot resume mid-segment")
            self.hand_over_segment(segment, visible)
        else:
            checkpoints = self.checkpoints
            for index in range(steps_done or 0, segment.steps):
                x, y = self.draw_batch(segment)
                loss = self.method.loss(x, y, visible)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.schedule(self.optimizer, index, segment.steps)
                self.optimizer.step()
                self.finish_step(segment, loss, len(x))
                if checkpoints is not None and index + 1 < segment.steps and checkpoints.due():
                    self.checkpoint(Position(segment.index, index + 1))
        self.end_training(segment, visible)

    def evaluate_if_due(self, segment: Segment, last: bool) -> None:
        """The accuracy matrix's row after this segment, every ``eval_every_segments`` segments and after the last."""
        if (segment.index + 1) % self.training.eval_every_segments == 0 or last:
            self.evaluate_seen(segment)
            self.report(segment.index + 1, force=True)

    def save_if_due(self, segment: Segment, checkpoint: bool | None = None) -> None:
        """Between segments: a checkpoint when one is due (or when ``checkpoint`` says), else the partial rows."""
        if self.checkpoints is None:
            return
        if checkpoint if checkpoint is not None else self.checkpoints.due():
            self.checkpoint(Position(segment.index + 1, None))
        elif time.monotonic() - self.partial_written >= PARTIAL_EVERY_S:
            self.write_partial()  # evaluations reach the output folder soon after they are made

    def report(self, segments_done: int, force: bool = False) -> None:
        """Tell the driver where the cell is: at most every REPORT_EVERY_S seconds, or now when ``force``."""
        now = time.monotonic()
        if self.progress is None or (not force and now - self.reported_at < REPORT_EVERY_S):
            return
        self.reported_at = now
        if self.extent is None:  # the stream's segments do not change within a cell: counted once
            segments = self.stream.segments()
            self.extent = (len(segments), sum(s.steps for s in segments))
        self.progress.send(
            CellProgress(
                cell_id=self.cell.cell_id,
                node=self.node,
                segment=segments_done,
                segments=self.extent[0],
                step=self.step,
                steps=self.extent[1],
                loss=None if self.last_loss is None else float(self.last_loss),
                accuracy=self.last_accuracy,
                elapsed_s=self.clock.wall(),
            )
        )

    def count_step(self, segment: Segment, loss: Tensor, batch: int) -> None:
        self.last_loss = loss.detach()
        self.step += 1
        self.samples += batch
        if self.progress is not None:
            self.report(segment.index)
        probe_every = self.training.probe_every
        if (
            probe_every > 0
            and self.step % probe_every == 0
            and self.training.probe_task < self.labels.num_tasks
            and self.training.probe_task in self.seen
        ):
            self.probe(segment)

    def hand_over_segment(self, segment: Segment, visible: int | None) -> None:
        """Give the segment's batches, drawn here as for any method, to a method that runs its own loop."""
        batch = self.training.batch_size
        first_step = self.step

        def draw() -> tuple[Tensor, Tensor]:
            xs, ys = [], []
            for index in range(segment.steps):
                x, local = self.stream.train_batch(segment, first_step + index, batch)
                xs.append(x)
                ys.append(self._targets(local, segment.task))
            return torch.cat(xs), torch.cat(ys)

        def after_step(loss: Tensor) -> None:
            if self.step - first_step >= segment.steps:
                raise RuntimeError(f"method {self.cell.method} took more than the segment's {segment.steps} steps")
            self.count_step(segment, loss, batch)

        def schedule(optimizer: torch.optim.Optimizer, index: int) -> None:
            scale_learning_rates(optimizer, lr_factor(index, segment.steps, self.training))

        example_bytes = math.prod(self.stream.input_shape) * torch.get_default_dtype().itemsize
        self.method.train_segment(
            SegmentData(
                task=visible,
                batch_size=batch,
                steps=segment.steps,
                nbytes=segment.steps * batch * example_bytes,
                draw=draw,
                make_optimizer=lambda params: make_optimizer(params, self.training),
                schedule=schedule,
                after_step=after_step,
            )
        )
        if self.step - first_step != segment.steps:
            raise RuntimeError(
                f"method {self.cell.method} took {self.step - first_step} steps of a segment of {segment.steps}"
            )

    def run(self) -> None:
        start = self.start
        if start is None and not self.rules.boundaries_in_training:
            self._restart_optimizer(self.method.begin_segment(None, 0))
        segments = self.stream.segments()
        self.report(start.segment if start is not None else 0, force=True)
        for segment in segments:
            if start is not None and segment.index < start.segment:
                continue  # trained before the checkpoint this cell resumed from
            resumed = start is not None and segment.index == start.segment
            self.train_segment(segment, start.steps_done if start is not None and resumed else None)
            self.evaluate_if_due(segment, segment is segments[-1])
            if segment is not segments[-1]:
                self.save_if_due(segment)


def run_cell(cell: Cell, settings: WorkerSettings) -> CellResult:
    """Train and evaluate one cell here; failures are returned as a failed run, with the rows made before."""
    torch.set_num_threads(max(1, settings.threads))
    started = time.time()
    loop: Loop | None = None
    try:
        loop = Loop(cell, settings)
        loop.run()
    except Exception as exc:  # a failed cell is a result, not a crash of the grid
        run = make_run_row(cell, settings, loop, started, exc, traceback.format_exc())
        return CellResult(run=run, evals=loop.rows if loop else [])
    return CellResult(run=make_run_row(cell, settings, loop, started), evals=loop.rows)


def failed_result(cell: Cell, settings: WorkerSettings, error: BaseException, trace: str = "") -> CellResult:
    """The result of a cell that never returned (its worker died, or the scheduler gave up on it)."""
    return CellResult(run=make_run_row(cell, settings, None, time.time(), error, trace), evals=[], keep_checkpoint=True)


def ray_node_id() -> str:
    """The Ray node this process runs on, or "" outside Ray (Ray is never imported here for it)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:2000]


def make_run_row(
    cell: Cell,
    settings: WorkerSettings,
    loop: Loop | None,
    started: float,
    error: BaseException | None = None,
    trace: str = "",
) -> dict[str, Any]:
    wall = loop.clock.wall() if loop else 0.0
    setup_seconds = loop.clock.setup_seconds if loop else 0.0
    eval_seconds = loop.clock.eval_seconds if loop else 0.0
    train_seconds = max(wall - setup_seconds - eval_seconds, 0.0)
    storage: dict[str, int] = {}
    if loop is not None:
        try:
            storage = {k: int(v) for k, v in loop.method.storage().items()}
        except Exception:  # a method that failed half-built may not know its storage
            storage = {}
    samples = loop.samples if loop else 0
    row = RunRow(
        cell_id=cell.cell_id,
        grid=cell.grid,
        tags=",".join(cell.tags),
        method=cell.method,
        method_version=cell.method_version,
        method_config=json.dumps(cell.method_config, sort_keys=True),
        stream=cell.stream,
        stream_config=json.dumps(cell.stream_config, sort_keys=True),
        scenario=cell.scenario,
        backbone=json.dumps(cell.backbone, sort_keys=True),
        training=json.dumps(cell.training, sort_keys=True),
        seed=cell.seed,
        status="ok" if error is None else "failed",
        error="" if error is None else _one_line(error),
        traceback=trace[-8000:],
        started_at=datetime.fromtimestamp(started, tz=UTC),
        wall_seconds=wall,
        setup_seconds=setup_seconds,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        steps=loop.step if loop else 0,
        samples=samples,
        samples_per_second=samples / train_seconds if train_seconds > 0 else 0.0,
        fused_cells=1,
        resumes=loop.resumes if loop else 0,
        peak_memory_bytes=loop.memory.peak_bytes() if loop else 0,
        peak_memory_kind=loop.memory.kind if loop else "",
        storage_bytes=sum(storage.values()),
        storage_parts=json.dumps(storage, sort_keys=True),
        device=settings.device,
        threads=settings.threads,
        hostname=socket.gethostname(),
        node_id=ray_node_id() if loop is not None else "",
        pid=os.getpid(),
        git_sha=settings.git_sha,
        harness_version=harness.__version__,
        torch_version=str(torch.__version__),
        python_version=platform.python_version(),
    )
    return as_record(row)
