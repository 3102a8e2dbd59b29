"""The registries: duplicates refused, unknown names answered with the closest ones, outside plugins loaded."""

from __future__ import annotations

import dataclasses as dataclasses_module
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


def _registered_configs() -> list[tuple[str, type]]:
    from scenarios import STREAMS

    return [(f"method {n}", METHODS.get(n).Config) for n in METHODS.names()] + [
        (f"stream {n}", STREAMS.get(n).Config) for n in STREAMS.names()
    ]


@pytest.mark.parametrize(("owner", "config"), _registered_configs(), ids=[o for o, _ in _registered_configs()])
def test_every_setting_is_described_where_it_is_declared(owner: str, config: type) -> None:
    """`harness list` shows each setting's comment: a new method's or stream's setting without one fails here."""
    import dataclasses

    from harness.config import field_descriptions

    described = field_descriptions(config)
    missing = [f.name for f in dataclasses.fields(config) if not (f.metadata.get("help") or described.get(f.name))]
    assert not missing, f"{owner}: add a comment on or above the declaration of {', '.join(missing)}"


@dataclasses_module.dataclass
class _Documented:
    """A docstring: not a description."""

    trailing: int = 1  # on the line
    # above the line,
    # over two lines
    above: int = 2
    wrapped: int = dataclasses_module.field(default=3, metadata={"min": 0})  # after a formatter wrapped it
    # a comment cut off by the blank line below

    bare: int = 4
    helped: int = dataclasses_module.field(default=5, metadata={"help": "from metadata"})


def test_descriptions_come_from_the_comments_of_each_declaration() -> None:
    from harness.config import describe_config, field_descriptions

    assert field_descriptions(_Documented) == {
        "trailing": "on the line",
        "above": "above the line, over two lines",
        "wrapped": "after a formatter wrapped it",
    }
    assert describe_config(_Documented)[-1] == "helped: an integer = 5  # from metadata"
    assert describe_config(_Documented)[-2] == "bare: an integer = 4"
