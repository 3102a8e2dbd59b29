"""Grid files: where the shipped ones are, and reading one (bounded, safe YAML) with its top-level checks.

Kept apart from ``harness.grid`` and free of torch, so that ``harness list grids`` and the grid name checks
answer without importing the methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, shown
from harness.registry import did_you_mean

GRIDS_DIR = Path(__file__).parent / "grids"
TOP_LEVEL_KEYS = ("name", "description", "defaults", "experiments", "include")
# Bounds that keep a hostile or mistaken grid file from hanging validation (the paper grid: 10 kB)
MAX_GRID_BYTES = 1_000_000
MAX_YAML_NODES = 250_000  # values in a grid file once its aliases are expanded: a "billion laughs" stops here
GRID_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # a grid's name is the default output folder runs/<name>


def grid_names() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def locate_grid(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = GRIDS_DIR / f"{name_or_path}.yaml"
    if path.suffix not in (".yaml", ".yml") and candidate.is_file():
        return candidate  # a shipped grid, even where a folder of its name is in the way
    if path.is_dir():
        raise ConfigError(
            f"grid file {name_or_path} is a folder, not a YAML file; give a .yaml file (or a grid name: "
            f"{', '.join(grid_names())})"
        )
    if path.suffix in (".yaml", ".yml") or path.exists():
        raise ConfigError(f"grid file {name_or_path} does not exist")
    raise ConfigError(
        f"unknown grid {name_or_path!r}{did_you_mean(name_or_path, grid_names())}; "
        f"known: {', '.join(grid_names())} (or a path to a .yaml file)"
    )


def _read_text(path: Path) -> str:
    """The file as text, refused in one line when it is too large to be a grid or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_GRID_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as error:
        raise ConfigError(f"grid file {path} cannot be read: {error.strerror or error}") from None
    if len(data) > MAX_GRID_BYTES:
        raise ConfigError(
            f"grid file {path} is larger than {MAX_GRID_BYTES:,} bytes, the most a grid file may be (the paper "
            "grid is 10 kB); list methods, streams and seeds within fewer experiments, or split it into grids"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"grid file {path} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def _check_expanded_size(events: Iterable[yaml.Event], path: Path) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES values, or refer to themselves, from its parse
    events alone (before any value is built): an alias counts as the size of what it names."""
    sizes: dict[str, int] = {}
    open_anchors: list[tuple[str | None, int]] = []
    total = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_anchors):
                raise ConfigError(f"grid file {path}: the alias *{event.anchor} refers to a value that contains it")
            total += sizes.get(event.anchor, 0)  # an undefined alias is the YAML loader's error
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_anchors.append((event.anchor, total))
            total += 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, start = open_anchors.pop()
            if anchor:
                sizes[anchor] = total - start
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"grid file {path} holds more than {MAX_YAML_NODES:,} values once its YAML aliases are expanded, "
                "the most a grid may hold (aliases that repeat aliases multiply: an alias bomb?)"
            )


def _parse_yaml(text: str, path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where installed: several times faster
    try:
        _check_expanded_size(yaml.parse(text, Loader=loader), path)
        return yaml.load(text, Loader=loader)  # a safe loader: plain values only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"grid file {path} is not valid YAML{where}: {problem}") from None


def load_grid_file(path: Path) -> dict[str, Any]:
    data = _parse_yaml(_read_text(path), path)
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {path} must be a mapping with a non-empty list under 'experiments'")
    unknown = sorted(str(key) for key in data if key not in TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"grid file {path}: unknown top-level key {shown(unknown[0])}"
            f"{did_you_mean(unknown[0], list(TOP_LEVEL_KEYS))}; accepted: {', '.join(TOP_LEVEL_KEYS)}"
        )
    if not (_non_empty_list(data.get("experiments")) or data.get("include")):
        raise ConfigError(f"grid file {path} must be a mapping with a non-empty list under 'experiments'")
    if not isinstance(data.get("experiments", []), list):
        raise ConfigError(f"grid file {path}: 'experiments' must be a list")
    if "include" in data and not (
        _non_empty_list(data["include"]) and all(isinstance(i, str) for i in data["include"])
    ):
        raise ConfigError(f"grid file {path}: 'include' must be a list of grid names or files")
    grid_name_of(data, path)
    return data


def grid_name_of(data: dict[str, Any], path: Path) -> str:
    """The grid's ``name:`` (else its file's stem): a plain name, since it names the output folder runs/<name>."""
    raw = data.get("name") or path.stem
    name = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
    if name is None or not GRID_NAME.fullmatch(name) or name in (".", ".."):
        source = "name" if data.get("name") else "name (taken from the file name; add a name:)"
        raise ConfigError(
            f"grid file {path}: {source} {shown(raw)} must be a plain name of at most 100 letters, digits, "
            "'_', '.' and '-' (not '.' or '..'): it names the default output folder runs/<name>"
        )
    return name


def _non_empty_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value)
