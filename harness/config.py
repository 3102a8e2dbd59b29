"""Turn plain YAML mappings into typed, frozen config dataclasses, or fail in one line.

Config classes are ordinary frozen dataclasses. A field may declare bounds with
``field(metadata={"min": 0, "max": 1})``; ``__post_init__`` may add checks of
its own by raising ``ValueError``. Supported field types: bool, int, float,
str, ``Literal[...]``, ``tuple[int, ...]`` / ``tuple[float, ...]`` and
``X | None``.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import re
import reprlib
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from harness.registry import did_you_mean

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad value in a grid or on the command line; the message is one line."""


INT64 = 2**63  # every integer setting must fit a signed 64-bit column (pyarrow, torch)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 80, 80


def shown(value: Any) -> str:
    """A value for an error message: its repr, cut short, so a huge or deeply nested value stays one short line."""
    return " ".join(_SHORT.repr(value).split())


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return value converted to tp, or raise TypeError."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(_coerce(v, get_args(tp)[0]) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        try:
            number = float(value)  # YAML reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):
            raise TypeError from None
        if not math.isfinite(number):  # .nan, .inf, "nan", 1e999: no setting means any of them
            raise TypeError
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError(f"unsupported config field type {tp!r}")


def _check_bounds(where: str, name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    low, high = metadata.get("min"), metadata.get("max")
    for v in values:
        if v is None:
            continue
        if isinstance(v, int) and not isinstance(v, bool) and not -INT64 <= v < INT64:
            raise ConfigError(f"{where}: {name} must fit in 64 bits (between -2**63 and 2**63 - 1), got {shown(value)}")
        if low is not None and v < low:
            raise ConfigError(f"{where}: {name} must be >= {low}, got {shown(value)}")
        if high is not None and v > high:
            raise ConfigError(f"{where}: {name} must be <= {high}, got {shown(value)}")


def parse_config(cls: type[C], raw: Mapping[str, Any] | None, where: str) -> C:
    """Build cls from raw, checking names, types and bounds; ``where`` prefixes every error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):  # `training: fast`: a word where settings were expected
        raise ConfigError(f"{where}: expected a mapping of settings (name: value, ...), got {shown(raw)}")
    raw = dict(raw)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            raise _unknown_setting(where, key, list(fields))
    values: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            values[name] = _coerce(value, hints[name])
        except TypeError:
            raise ConfigError(f"{where}: {name} must be {_type_name(hints[name])}, got {shown(value)}") from None
        _check_bounds(where, name, values[name], fields[name].metadata)
    try:
        return cls(**values)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_setting(cls: type, name: str, value: Any, where: str) -> None:
    """One setting of cls on its own: its name, type and bounds (what parse_config checks field by field)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if name not in fields:
        raise _unknown_setting(where, name, list(fields))
    hint = typing.get_type_hints(cls)[name]
    try:
        coerced = _coerce(value, hint)
    except TypeError:
        raise ConfigError(f"{where}: {name} must be {_type_name(hint)}, got {shown(value)}") from None
    _check_bounds(where, name, coerced, fields[name].metadata)


def _unknown_setting(where: str, key: Any, fields: list[str]) -> ConfigError:
    return ConfigError(
        f"{where}: unknown setting {key!r}{did_you_mean(str(key), fields)}; accepted: {', '.join(fields) or 'none'}"
    )


ADDED = "added"  # field metadata: a setting added after cells were run, whose default is the earlier behaviour


def added_setting(default: Any, **metadata: Any) -> Any:
    """A setting that came after results existed: at its default it is left out of a cell's config, so that the
    cells run before it keep their ids (and are not run again, or orphaned, when the harness gains it)."""
    return dataclasses.field(default=default, metadata={**metadata, ADDED: True})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists), without added settings at their default."""
    return {
        f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
        for f in dataclasses.fields(config)
        if not (f.metadata.get(ADDED) and getattr(config, f.name) == f.default)
    }


def describe_config(cls: type) -> list[str]:
    """One line per setting: name, type, default and bounds, then what it means (for ``harness list``)."""
    hints = typing.get_type_hints(cls)
    descriptions = field_descriptions(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        bounds = "".join(f" {k}={f.metadata[k]}" for k in ("min", "max") if k in f.metadata)
        meaning = f.metadata.get("help") or descriptions.get(f.name)
        lines.append(
            f"{f.name}: {_type_name(hints[f.name])} = {default!r}{bounds}" + (f"  # {meaning}" if meaning else "")
        )
    return lines


def field_descriptions(cls: type) -> dict[str, str]:
    """Each setting's description where the config class declares it (and its base classes), as simple-parsing
    reads them: the comment after the declaration, else the comment lines right above it. A setting is thus
    documented once, beside its code."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            found.update(_declaration_comments(klass))
    return found


def _declaration_comments(klass: type) -> dict[str, str]:
    """Setting name -> the comments within its declaration (however a formatter wrapped it), else the comment
    lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # built in a REPL or from a string: no source to read
        return {}
    lines = source.splitlines()
    found: dict[str, str] = {}
    above: list[str] = []  # comment lines since the last statement or blank line
    within: list[str] = []  # comments inside the statement being read
    start: int | None = None  # the statement's first line
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            (above if start is None else within).append(token.string.lstrip("#").strip())
        elif token.type == tokenize.NL:
            if start is None and not token.line.strip():
                above = []
        elif token.type == tokenize.NEWLINE and start is not None:
            declared = re.match(r"\s+(\w+)\s*:(?!=)", lines[start - 1])
            if declared and (within or above):
                found[declared.group(1)] = " ".join(within or above)
            above, within, start = [], [], None
        elif token.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING) and start is None:
            start = token.start[0]
    return found
