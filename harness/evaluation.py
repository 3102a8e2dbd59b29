"""What evaluates: a method's accuracy (and task-inference accuracy) on one task's test set, and the rows it
writes down. The training loop (harness.runner.Loop) decides when; this decides how, and never trains."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from methods.base import LabelSpace, Method, Prediction
from results.rows import EvalRow, as_record
from scenarios.streams import Stream
from scenarios.taxonomy import Rules, to_label_space

Measures = dict[str, tuple[float, int]]  # metric -> (value, test examples behind it)
GROUP_BATCHES = 128  # test batches handed to a method at once (``Method.predict_many``), so it can batch across them


def grouped(batches: Iterator[tuple[Tensor, Tensor]], size: int) -> Iterator[list[tuple[Tensor, Tensor]]]:
    group: list[tuple[Tensor, Tensor]] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


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

    @torch.enable_grad()
    def measure(self, task: int, limit: int | None) -> Measures:
        """Accuracy on a task's test set, and task-inference accuracy where the task is hidden and inferable."""
        visible = task if self.rules.task_at_test else None
        correct = torch.zeros((), device=self._device(), dtype=torch.long)
        task_correct = torch.zeros((), device=self._device(), dtype=torch.long)
        n = 0
        inferred_any = False
        for group in grouped(self.stream.test_batches(task, self.batch_size, limit), GROUP_BATCHES):
            predictions = self.method.predict_many([x for x, _ in group], visible)
            if len(predictions) != len(group):
                raise ValueError(
                    f"method {self.method.name} gave {len(predictions)} predictions for {len(group)} test batches"
                )
            for (x, local), prediction in zip(group, predictions, strict=True):
                right, right_task = self._score(x, local, prediction, task, visible)
                correct += right
                if right_task is not None:
                    task_correct += right_task
                    inferred_any = True
                n += len(x)
        metrics = {"accuracy": (correct.item() / max(n, 1), n)}
        if inferred_any:
            metrics["task_inference_accuracy"] = (task_correct.item() / max(n, 1), n)
        return metrics

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
