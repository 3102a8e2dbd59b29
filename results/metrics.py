"""Continual-learning metrics from an accuracy matrix, as plain functions of numpy arrays.

``A[i, j]`` is the accuracy on task j after training segment i (NaN where task
j was not yet seen). Definitions:

- average accuracy after segment i: mean over j <= i of A[i, j]
- forgetting (Chaudhry et al. 2018): mean over j < T-1 of max_{i < T-1} A[i, j] - A[T-1, j]
- backward transfer (Lopez-Paz and Ranzato 2017): mean over j < T-1 of A[T-1, j] - A[j, j]
- last-k average (PSP Figure 3's table): mean of A[T-1, j] over the last k tasks
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


def average_accuracy(matrix: np.ndarray, after: int = -1) -> float:
    return float(np.nanmean(matrix[after])) if matrix.size else float("nan")


def forgetting(matrix: np.ndarray) -> float:
    last = len(matrix) - 1
    if last < 1:
        return float("nan")
    best_before = np.nanmax(matrix[:last, :last], axis=0)
    return float(np.mean(best_before - matrix[last, :last]))


def backward_transfer(matrix: np.ndarray) -> float:
    last = len(matrix) - 1
    if last < 1:
        return float("nan")
    return float(np.mean(matrix[last, :last] - np.diag(matrix)[:last]))


def last_k_average(matrix: np.ndarray, k: int = 10) -> float:
    """Mean final accuracy on the last k tasks trained (PSP's metric after 50 tasks, after Zenke et al.)."""
    if not matrix.size:
        return float("nan")
    last = len(matrix) - 1
    return float(np.mean(matrix[last, max(0, last + 1 - k) : last + 1]))
