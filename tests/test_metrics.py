"""Metrics on small accuracy matrices worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from results.metrics import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    backward_transfer_is_approximate,
    forgetting,
    last_k_average,
)

nan = float("nan")
# A[i, j]: accuracy on task j after training task i
A = np.array(
    [
        [0.9, nan, nan],
        [0.6, 0.8, nan],
        [0.5, 0.7, 1.0],
    ]
)


def test_average_accuracy_uses_seen_tasks_only() -> None:
    assert average_accuracy(A, after=0) == pytest.approx(0.9)
    assert average_accuracy(A, after=1) == pytest.approx((0.6 + 0.8) / 2)
    assert average_accuracy(A) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_forgetting_is_the_drop_from_the_best_earlier_accuracy() -> None:
    # task 0: best before the end 0.9, final 0.5 -> 0.4; task 1: best 0.8, final 0.7 -> 0.1
    assert forgetting(A) == pytest.approx((0.4 + 0.1) / 2)


def test_forgetting_takes_the_maximum_not_the_diagonal() -> None:
    rising = np.array([[0.5, nan, nan], [0.9, 0.8, nan], [0.6, 0.7, 0.9]])
    # task 0 peaked at 0.9 after segment 1, ends at 0.6 -> 0.3; task 1: 0.8 -> 0.7 -> 0.1
    assert forgetting(rising) == pytest.approx(0.2)
    # backward transfer compares with the diagonal instead: (0.6 - 0.5 + 0.7 - 0.8) / 2 = 0
    assert backward_transfer(rising) == pytest.approx(0.0)


def test_backward_transfer_is_negative_when_forgetting() -> None:
    assert backward_transfer(A) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_one_task_has_no_forgetting_or_transfer() -> None:
    single = np.array([[0.9]])
    assert math.isnan(forgetting(single)) and math.isnan(backward_transfer(single))


def test_last_k_average() -> None:
    assert last_k_average(A, k=2) == pytest.approx((0.7 + 1.0) / 2)
    assert last_k_average(A, k=10) == pytest.approx(average_accuracy(A))


def test_accuracy_matrix_from_long_rows() -> None:
    rows = [
        ("c", 0, 0, 0.9),
        ("c", 1, 0, 0.6),
        ("c", 1, 1, 0.8),
        ("other", 0, 0, 0.1),
    ]
    evals = pd.DataFrame(
        [{"cell_id": c, "segment": s, "eval_task": t, "metric": "accuracy", "value": v} for c, s, t, v in rows]
        + [{"cell_id": "c", "segment": 1, "eval_task": -1, "metric": "storage_bytes", "value": 5.0}]
    )
    matrix = accuracy_matrix(evals, "c")
    np.testing.assert_allclose(matrix, np.array([[0.9, nan], [0.6, 0.8]]))


def _long(cells: dict[tuple[int, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"cell_id": "c", "segment": s, "eval_task": t, "metric": "accuracy", "value": v}
            for (s, t), v in cells.items()
        ]
    )


# 6 tasks evaluated every 3 segments: after segments 2 and 5 only (rows 0, 1, 3, 4 stay empty)
SPARSE = accuracy_matrix(
    _long(
        {
            **{(2, j): v for j, v in enumerate([0.7, 0.8, 0.9])},
            **{(5, j): v for j, v in enumerate([0.5, 0.6, 0.9, 0.8, 0.85, 0.95])},
        }
    )
)


def test_a_sparse_schedule_keeps_segments_as_rows() -> None:
    assert SPARSE.shape == (6, 6) and np.isnan(SPARSE[[0, 1, 3, 4]]).all()
    assert average_accuracy(SPARSE) == pytest.approx((0.5 + 0.6 + 0.9 + 0.8 + 0.85 + 0.95) / 6)


def test_forgetting_on_a_sparse_schedule_covers_every_task_evaluated_before_the_end() -> None:
    # tasks 0-2 were evaluated after segment 2: (0.7 - 0.5) + (0.8 - 0.6) + (0.9 - 0.9), over 3 tasks;
    # tasks 3-5 were first evaluated at the end and do not count
    assert forgetting(SPARSE) == pytest.approx(0.4 / 3)


def test_backward_transfer_on_a_sparse_schedule_is_against_the_first_evaluation_and_marked_approximate() -> None:
    assert backward_transfer(SPARSE) == pytest.approx(-0.4 / 3)
    assert backward_transfer_is_approximate(SPARSE)
    assert not backward_transfer_is_approximate(A)


def test_a_continuous_stream_has_forgetting_but_no_backward_transfer() -> None:
    # 4 windows of a 2-window cycle: task w recurs at segments w and w + 2
    rotating = accuracy_matrix(
        _long({(0, 0): 0.9, (1, 0): 0.8, (1, 1): 0.7, (2, 0): 0.6, (2, 1): 0.9, (3, 0): 0.7, (3, 1): 0.5})
    )
    # best earlier: task 0 0.9, task 1 0.9; final 0.7 and 0.5
    assert forgetting(rotating) == pytest.approx((0.2 + 0.4) / 2)
    assert math.isnan(backward_transfer(rotating)) and not backward_transfer_is_approximate(rotating)
    assert last_k_average(rotating, k=1) == pytest.approx(0.5)
