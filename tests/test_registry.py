"""The registries: duplicates refused, unknown names answered with the closest ones, outside plugins loaded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.registry import Registry, UnknownNameError
from methods import METHODS

PLUGIN = """
from methods.base import register_method
from methods.standard import Standard


@register_method("outside_method")
class OutsideMethod(Standard):
    version = "7"
"""


def test_duplicate_names_are_refused() -> None:
    registry: Registry[object] = Registry("thing")
    registry.register("a")(object)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        registry.register("a")(int)


def test_unknown_name_lists_the_closest() -> None:
    # the closest name comes first
    with pytest.raises(UnknownNameError, match=r"unknown method 'standart' \(did you mean: standard[,?]"):
        METHODS.get("standart")


def test_an_outside_package_registers_through_its_entry_point(outside_package: Callable) -> None:
    outside_package(METHODS, "harness.methods", "outside_plugin", PLUGIN)
    cls = METHODS.get("outside_method")
    assert cls.version == "7" and "outside_method" in METHODS.names()


def test_the_methods_scenario_names_are_the_taxonomys() -> None:
    """methods.base spells the scenarios out (methods never import scenarios); they must stay the enum's values."""
    from methods.base import SCENARIO_NAMES
    from scenarios.taxonomy import Scenario

    assert SCENARIO_NAMES == tuple(scenario.value for scenario in Scenario)
