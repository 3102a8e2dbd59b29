"""What evaluates: a method's accuracy (and task-inference accuracy) on one task's test set, and the rows it
writes down. The training loop (harness.runner.Loop) decides when; this decides how, and never trains."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from methods.base import LabelSpace, Method, Prediction
from results.rows import EvalRow, as_record
from scenarios.streams import Stream
from scenarios.taxonomy import Rules, to_label_space

Tagged = tuple[int, Tensor, Tensor]  # (task, inputs, local labels) of one test batch

Measures = dict[str, tuple[float, int]]  # metric -> (value, test examples behind it)
GROUP_ELEMENTS = 2**25  # input elements (128 MiB as float32) of the test batches handed to a method at once
GROUP_BATCHES = 1024  # and at most this many batches (``Method.predict_many``), so it can batch across them


def grouped(batches: Iterator[Tagged], split_tasks: bool) -> Iterator[list[Tagged]]:
    """Consecutive test batches in groups of at most GROUP_ELEMENTS input elements and GROUP_BATCHES batches
    (a single larger batch goes alone); with ``split_tasks`` a group never holds two tasks' batches."""
    group: list[Tagged] = []
    elements = 0
    for batch in batches:
        full = elements + batch[1].numel() > GROUP_ELEMENTS or len(group) == GROUP_BATCHES
        if group and (full or (split_tasks and batch[0] != group[-1][0])):
            yield group
            group, elements = [], 0
        group.append(batch)
        elements += batch[1].numel()
    if group:
        yield group


class Tally:
    """One task's right answers so far, kept on the device so that scoring never waits for it."""

    def __init__(self, device: torch.device) -> None:
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.task_correct = torch.zeros((), device=device, dtype=torch.long)
        self.n = 0
        self.inferred_any = False

    def measures(self) -> Measures:
        metrics = {"accuracy": (self.correct.item() / max(self.n, 1), self.n)}
        if self.inferred_any:
            metrics["task_inference_accuracy"] = (self.task_correct.item() / max(self.n, 1), self.n)
        return metrics


class Evaluator:
    """Scores a method on a task's test set under the scenario's rules (whether the task is given at test)."""

    def __init__(self, method: Method, stream: Stream, labels: LabelSpace, rules: Rules, batch_size: int) -> None:
        self.method = method
        self.stream = stream
        self.labels = labels
        self.rules = rules
        self.batch_size = batch_size

    def targets(self, local: Tensor, task: int) -> Tensor:
        """A task's local labels in the label space the method predicts over."""
        return to_label_space(local, task, self.labels.classes_per_task, self.labels.shared)

    def measure(self, task: int, limit: int | None) -> Measures:
        """Accuracy on a task's test set, and task-inference accuracy where the task is hidden and inferable."""
        return self.measure_all([task], limit)[task]

    @torch.enable_grad()
    def measure_all(self, tasks: Sequence[int], limit: int | None) -> dict[int, Measures]:
        """``measure`` of each task. Where the task is hidden at test, a method cannot tell the tasks' batches
        apart anyway, so its groups of batches span tasks (and SupSup unpacks its masks once per group)."""
        tallies = {task: Tally(self._device()) for task in tasks}
        tagged = (
            (task, x, local) for task in tasks for x, local in self.stream.test_batches(task, self.batch_size, limit)
        )
        for group in grouped(tagged, split_tasks=self.rules.task_at_test):
            visible = group[0][0] if self.rules.task_at_test else None
            predictions = iter(self.method.predict_many([x for _, x, _ in group], visible))
            for task, x, local in group:
                prediction = next(predictions, None)
                if prediction is None:
                    raise ValueError(f"method {self.method.name} gave fewer predictions than {len(group)} test batches")
                right, right_task = self._score(x, local, prediction, task, visible)
                tally = tallies[task]
                tally.correct += right
                if right_task is not None:
                    tally.task_correct += right_task
                    tally.inferred_any = True
                tally.n += len(x)
            if next(predictions, None) is not None:
                raise ValueError(f"method {self.method.name} gave more predictions than {len(group)} test batches")
        return {task: tally.measures() for task, tally in tallies.items()}

    def _score(
        self, x: Tensor, local: Tensor, prediction: Prediction, task: int, visible: int | None
    ) -> tuple[Tensor, Tensor | None]:
        """One batch's right answers, and its right inferred tasks (None where no task was inferred)."""
        logits = prediction.logits
        if logits.shape != (len(x), self.labels.num_outputs):
            raise ValueError(
                f"method {self.method.name} predicted logits of shape {tuple(logits.shape)}, "
                f"the label space needs ({len(x)}, {self.labels.num_outputs})"
            )
        predicted = logits.argmax(1)
        correct = (predicted == self.targets(local, task)).sum()
        inferred = prediction.task
        if inferred is None and not self.labels.shared:
            inferred = predicted // self.labels.classes_per_task  # the task a k*l-way answer names
        if inferred is None or visible is not None:
            return correct, None
        return correct, (inferred == task).sum()

    def _device(self) -> torch.device:
        return self.stream.device


class Recorder:
    """The evals rows of one cell, in the order they were made."""

    def __init__(self, cell_id: str) -> None:
        self.cell_id = cell_id
        self.rows: list[dict[str, Any]] = []

    def record(
        self, step: int, segment: int, tasks_seen: int, eval_task: int, metric: str, value: float, n: int
    ) -> None:
        row = EvalRow(self.cell_id, step, segment, tasks_seen, eval_task, metric, float(value), int(n))
        self.rows.append(as_record(row))
