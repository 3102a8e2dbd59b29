"""Command-line changes to a grid: ``--set KEY=VALUE`` and ``--method NAME[:key=value,...]``.

``--set`` paths (``defaults.`` may prefix any of them)::

    training.lr=1e-3                  every experiment's training setting
    seeds=3 | seeds=[0,4]             every experiment's seeds
    backbone=fc_1024_1024             every experiment's backbone (a preset, or a YAML mapping)
    methods.ewc.ewc_lambda=5          a setting of every entry of method ewc
    streams.permuted_mnist.num_tasks=10

A value is read as YAML (``true``, ``[256, 256]``, ``{name: fc, hidden: [64]}``); a number YAML would leave a
string (``1e-3``) is a number. The command line wins over the grid. A method or stream that no experiment has
is an error, so a typo never runs the grid unchanged.

``--method`` adds a method to every experiment, paired with the scenarios and backbones of that experiment it
supports (others are skipped, not refused); it is kept by ``--methods``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from harness.config import ConfigError, check_setting, shown
from harness.registry import UnknownNameError, did_you_mean

SECTIONS = ("training", "seeds", "backbone", "methods", "streams")
SHAPES = "training.KEY, seeds, backbone, methods.NAME.KEY or streams.NAME.KEY"


@dataclass(frozen=True)
class Override:
    """One ``--set``: where it goes and the value, as YAML read it."""

    text: str  # as given, for messages
    section: str  # one of SECTIONS
    name: str | None  # the method or stream it changes; None for training, seeds, backbone
    key: str | None  # the setting; None for seeds and backbone
    value: Any


@dataclass(frozen=True)
class AddedMethod:
    """One ``--method``: a method and its settings, added to every experiment."""

    text: str
    name: str
    settings: tuple[tuple[str, Any], ...] = ()


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it, except that what reads as a number is a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                continue
    return value


def parse_override(text: str) -> Override:
    """``KEY=VALUE`` with KEY a dotted path (see the module docstring), or a one-line ConfigError."""
    where = f"--set {text}"
    path, sep, raw = text.partition("=")
    if not sep or not path.strip() or not raw.strip():
        raise ConfigError(f"{where}: expected KEY=VALUE with KEY one of {SHAPES}")
    parts = path.strip().split(".")
    if parts[0] == "defaults":
        parts = parts[1:]
    section = parts[0] if parts else ""
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown key {shown(section)}{did_you_mean(section, list(SECTIONS))}; {SHAPES}")
    expected = {"training": 2, "seeds": 1, "backbone": 1, "methods": 3, "streams": 3}[section]
    if len(parts) != expected or not all(parts):
        raise ConfigError(f"{where}: {section} takes {SHAPE_OF.get(section, section)}=VALUE")
    value = parse_value(raw.strip())
    if section == "training":
        check_setting(_training_config(), parts[1], value, where)
        return Override(text, section, None, parts[1], value)
    if section in ("seeds", "backbone"):
        return Override(text, section, None, None, value)
    name, key = parts[1], parts[2]
    check_setting(_registered(where, section, name).Config, key, value, f"{where}: {section[:-1]} {name}")
    return Override(text, section, name, key, value)


def parse_added_method(text: str) -> AddedMethod:
    """``NAME`` or ``NAME:key=value,key=value`` (commas inside [] or {} belong to the value)."""
    where = f"--method {text}"
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"{where}: expected NAME or NAME:key=value,...")
    cls = _registered(where, "methods", name)
    settings: dict[str, Any] = {}
    for item in _split_top_level(rest) if rest.strip() else []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"{where}: expected key=value, got {shown(item)}")
        settings[key] = parse_value(raw.strip())
        check_setting(cls.Config, key, settings[key], f"{where}: method {name}")
    return AddedMethod(text, name, tuple(settings.items()))


def apply_overrides(spec: dict[str, Any], overrides: tuple[Override, ...], used: set[str]) -> dict[str, Any]:
    """The experiment ``spec`` with the overrides applied; each one that found its target is added to ``used``."""
    spec = dict(spec)
    for override in overrides:
        if override.section == "training":
            training = spec.get("training")
            spec["training"] = {**(training if isinstance(training, dict) else {}), override.key: override.value}
            used.add(override.text)
        elif override.section == "seeds":
            spec["seeds"] = override.value
            used.add(override.text)
        elif override.section == "backbone":
            spec.pop("backbones", None)
            spec["backbone"] = override.value
            used.add(override.text)
        else:
            entries = spec.get(override.section)
            if not isinstance(entries, list):
                entries = [] if entries is None else [entries]
            spec[override.section] = [_set_in_entry(entry, override, used) for entry in entries]
    return spec


def check_all_used(overrides: tuple[Override, ...], used: set[str]) -> None:
    for override in overrides:
        if override.text not in used:
            kind = override.section[:-1]
            raise ConfigError(f"--set {override.text}: no experiment of this grid has {kind} {override.name}")


def _set_in_entry(entry: Any, override: Override, used: set[str]) -> Any:
    if entry == override.name:
        used.add(override.text)
        return {"name": entry, override.key: override.value}
    if isinstance(entry, dict) and entry.get("name") == override.name:
        used.add(override.text)
        return {**entry, override.key: override.value}
    return entry  # another method or stream, or a malformed entry that validation names


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items


SHAPE_OF = {"training": "training.KEY", "methods": "methods.NAME.KEY", "streams": "streams.NAME.KEY"}


def _registered(where: str, section: str, name: str) -> Any:
    from methods import METHODS
    from scenarios import STREAMS

    registry = METHODS if section == "methods" else STREAMS
    try:
        return registry.get(name)
    except UnknownNameError as error:
        raise ConfigError(f"{where}: {error}") from None


def _training_config() -> type:
    from harness.training import TrainingConfig

    return TrainingConfig
