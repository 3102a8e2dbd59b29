"""Continual-learning metrics from an accuracy matrix, as plain functions of numpy arrays.

``A[i, j]`` is the accuracy on task j after training segment i: NaN where task
j was not yet seen, and a whole row of NaN for a segment after which the grid
did not evaluate (``eval_every_segments > 1``). Rows are segments, never
evaluation counts, so a sparse schedule never shifts a task index. Definitions
(E: the segments after which the matrix was evaluated; f: the last of them):

- average accuracy after segment i: mean over the tasks seen of A[i, j]
- forgetting (Chaudhry et al. 2018): mean over the tasks j evaluated at least
  once before f of ``max_{i in E, i < f} A[i, j] - A[f, j]``
- backward transfer (Lopez-Paz and Ranzato 2017): mean over the same tasks of
  ``A[f, j] - A[e_j, j]``, with e_j the first evaluation after j was trained.
  In a discrete stream segment j trains task j, so it is exact when e_j = j
  (every task evaluated right after its segment) and approximate otherwise
  (``backward_transfer_is_approximate``)
- last-k average (PSP Figure 3's table): mean of A[f, j] over the last k tasks

Continuous streams (more segments than tasks: PSP's rotating streams, where a
task is a recurring window of the cycle) have no segment that trains a task,
so backward transfer is undefined there (NaN); forgetting keeps its meaning,
the drop from the best accuracy on a window at an earlier evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def accuracy_matrix(evals: pd.DataFrame, cell_id: str | None = None) -> np.ndarray:
    """The matrix from the evals table's ``accuracy`` rows (one cell's; ``cell_id`` selects it)."""
    rows = evals[evals["metric"] == "accuracy"]
    if cell_id is not None:
        rows = rows[rows["cell_id"] == cell_id]
    if rows.empty:
        return np.zeros((0, 0))
    segments = int(rows["segment"].max()) + 1
    tasks = int(rows["eval_task"].max()) + 1
    matrix = np.full((segments, max(segments, tasks)), np.nan)
    matrix[rows["segment"].to_numpy(int), rows["eval_task"].to_numpy(int)] = rows["value"].to_numpy(float)
    return matrix


def evaluated_segments(matrix: np.ndarray) -> np.ndarray:
    """The rows of the matrix that hold an evaluation (ascending)."""
    if not matrix.size:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.isfinite(matrix).any(axis=1))


def evaluated_tasks(matrix: np.ndarray) -> np.ndarray:
    """The columns of the matrix that hold an evaluation (ascending)."""
    if not matrix.size:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.isfinite(matrix).any(axis=0))


def is_continuous(matrix: np.ndarray) -> bool:
    """More segments than tasks: segments are windows of a recurring cycle, not tasks."""
    return len(matrix) > len(evaluated_tasks(matrix))


def final_row(matrix: np.ndarray) -> np.ndarray:
    """The accuracies at the last evaluation (an empty array if there is none)."""
    rows = evaluated_segments(matrix)
    return matrix[rows[-1]] if len(rows) else np.zeros(0)


def average_accuracy(matrix: np.ndarray, after: int | None = None) -> float:
    """Mean accuracy over the tasks seen after segment ``after`` (default: the last evaluation)."""
    row = final_row(matrix) if after is None else matrix[after]
    finite = row[np.isfinite(row)]
    return float(finite.mean()) if finite.size else float("nan")


def _tasks_evaluated_before_final(matrix: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(final row, earlier evaluated rows, tasks with an accuracy at one of those rows and at the final one)."""
    rows = evaluated_segments(matrix)
    if len(rows) < 2:
        return -1, rows[:0], rows[:0]
    final, before = int(rows[-1]), rows[:-1]
    earlier = np.isfinite(matrix[before]).any(axis=0) & np.isfinite(matrix[final])
    return final, before, np.flatnonzero(earlier)


def forgetting(matrix: np.ndarray) -> float:
    final, before, tasks = _tasks_evaluated_before_final(matrix)
    if not len(tasks):
        return float("nan")
    best_before = np.nanmax(matrix[np.ix_(before, tasks)], axis=0)
    return float(np.mean(best_before - matrix[final, tasks]))


def first_evaluations(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tasks evaluated before the final evaluation, the row of each one's first evaluation)."""
    _, _, tasks = _tasks_evaluated_before_final(matrix)
    first = np.array([int(np.flatnonzero(np.isfinite(matrix[:, j]))[0]) for j in tasks], dtype=int)
    return tasks, first


def backward_transfer(matrix: np.ndarray) -> float:
    tasks, first = first_evaluations(matrix)
    if not len(tasks) or is_continuous(matrix):
        return float("nan")
    final = int(evaluated_segments(matrix)[-1])
    return float(np.mean(matrix[final, tasks] - matrix[first, tasks]))


def backward_transfer_is_approximate(matrix: np.ndarray) -> bool:
    """True when some task's first evaluation came later than right after its own segment (segment j = task j)."""
    tasks, first = first_evaluations(matrix)
    return bool(len(tasks)) and not is_continuous(matrix) and bool(np.any(first != tasks))


def last_k_average(matrix: np.ndarray, k: int = 10) -> float:
    """Mean final accuracy on the last k tasks trained (PSP's metric after 50 tasks, after Zenke et al.)."""
    tasks = evaluated_tasks(matrix)
    if not len(tasks):
        return float("nan")
    return float(np.mean(final_row(matrix)[tasks[-k:]]))
