"""SupSup's taxonomy of scenarios (Wortsman et al. 2020, Table 1): what task information a method gets.

The runner applies these rules; methods only see their consequences (a task id
or None, and the label space).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from harness.registry import UnknownNameError, unknown_name_message


class Scenario(StrEnum):
    GG = "GG"
    GNs = "GNs"
    GNu = "GNu"
    NNs = "NNs"


@dataclass(frozen=True)
class Rules:
    task_in_training: bool  # the method is told the task id while training
    boundaries_in_training: bool  # the method is told when a segment starts and ends
    task_at_test: bool  # the method is told the task id at test time
    shared_labels: bool  # l-way over task-local labels; else k*l-way (task and class)
    description: str


RULES: dict[Scenario, Rules] = {
    Scenario.GG: Rules(True, True, True, True, "task given in training and at test; task-local labels"),
    Scenario.GNs: Rules(True, True, False, True, "task given in training, hidden at test; shared labels"),
    Scenario.GNu: Rules(True, True, False, False, "task given in training, hidden at test; k*l-way labels"),
    Scenario.NNs: Rules(False, False, False, True, "task and boundaries hidden in training and at test; shared"),
}


def parse_scenario(name: str) -> Scenario:
    try:
        return Scenario(name)
    except ValueError:
        raise UnknownNameError(unknown_name_message("scenario", str(name), [s.value for s in Scenario])) from None


def to_label_space(local_labels, task: int, classes_per_task: int, shared: bool):  # noqa: ANN001, ANN201
    """Map task-local labels (0..l-1) into the scenario's label space: unchanged, or task*l + y when unshared."""
    return local_labels if shared else local_labels + task * classes_per_task
