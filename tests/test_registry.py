"""The registries: duplicates refused, unknown names answered with the closest ones, outside plugins loaded."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_an_outside_package_registers_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "outside_plugin.py").write_text(PLUGIN)
    info = tmp_path / "outside_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.methods]\noutside = outside_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "outside_plugin", raising=False)
    cls = METHODS.get("outside_method")
    assert cls.version == "7" and "outside_method" in METHODS.names()
