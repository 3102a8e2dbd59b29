"""The evaluator's grouping of test batches: groups span tasks only where the task is hidden at test, and the
scores are those of batch-by-batch evaluation however the batches are grouped."""

from __future__ import annotations

import pytest
from test_supermasks import trained_loop

from harness import evaluation


def spy_on_groups(monkeypatch) -> list[set[int]]:  # noqa: ANN001
    """The tasks of every group the evaluator hands to the method."""
    seen: list[set[int]] = []
    original = evaluation.grouped

    def recording(batches, split_tasks):  # noqa: ANN001, ANN202
        for group in original(batches, split_tasks):
            seen.append({task for task, _, _ in group})
            yield group

    monkeypatch.setattr(evaluation, "grouped", recording)
    return seen


@pytest.mark.parametrize("scenario", ["GG", "GNs", "GNu", "NNs"])
def test_grouped_evaluation_scores_what_batch_by_batch_evaluation_scores(monkeypatch, scenario: str) -> None:  # noqa: ANN001
    loop = trained_loop(scenario, {})
    tasks = list(range(loop.stream.num_tasks))
    monkeypatch.setattr(evaluation, "GROUP_BATCHES", 1)
    one_by_one = loop.evaluator.measure_all(tasks, None)
    monkeypatch.setattr(evaluation, "GROUP_BATCHES", 1024)
    x, _ = next(loop.stream.test_batches(0, loop.evaluator.batch_size))
    monkeypatch.setattr(evaluation, "GROUP_ELEMENTS", 5 * x.numel())  # 12 batches a task: groups cut across tasks
    groups = spy_on_groups(monkeypatch)
    together = loop.evaluator.measure_all(tasks, None)
    assert together == one_by_one
    assert one_by_one == {task: loop.evaluator.measure(task, None) for task in tasks}
    spans = max(len(group) for group in groups)
    assert spans == (1 if loop.rules.task_at_test else 2)
    assert len(groups) > len(tasks)
    if not loop.rules.task_at_test:
        assert any("task_inference_accuracy" in measures for measures in together.values()) or scenario == "NNs"


@pytest.mark.parametrize("surplus", [-1, 1])
def test_a_method_giving_the_wrong_number_of_predictions_is_named(monkeypatch, surplus: int) -> None:  # noqa: ANN001
    loop = trained_loop("GNu", {}, tasks=2)
    method = loop.method
    original = method.predict_many

    def miscounted(batches, task):  # noqa: ANN001, ANN202
        predictions = list(original(batches, task))
        return predictions[:-1] if surplus < 0 else predictions + predictions[:1]

    monkeypatch.setattr(method, "predict_many", miscounted)
    with pytest.raises(ValueError, match="method supsup gave (fewer|more) predictions than"):
        loop.evaluator.measure_all([0, 1], None)


def test_a_limit_scores_only_the_first_test_examples() -> None:
    loop = trained_loop("GNu", {}, tasks=2)
    measures = loop.evaluator.measure(1, 20)
    assert {metric: n for metric, (_, n) in measures.items()} == {"accuracy": 20, "task_inference_accuracy": 20}
