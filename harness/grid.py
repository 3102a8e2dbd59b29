"""Grids: named, declarative YAML lists of experiments, expanded and validated into cells.

A grid file::

    name: smoke
    description: ...
    defaults:                     # merged under every experiment
      seeds: 2                    # a count (0..N-1) or a list
      backbone: lenet_300_100     # preset or {name: fc, hidden: [...]}
      training: {lr: 1.0e-4}
    experiments:
      - tag: permuted-gg          # what figure or table it reproduces
        methods: [standard, {name: ewc, ewc_lambda: 100}]
        streams: [{name: permuted_mnist, num_tasks: 3, steps_per_task: 200}]
        scenarios: [GG]

Every (method, stream, scenario, backbone, seed) combination of an experiment
is a cell; a method paired with a scenario it does not support is an error.

A grid may ``include: [psp, supsup]`` other grids: their experiments, each
with its own grid's defaults, join its own (``paper`` is made this way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.backbones import parse_backbone
from harness.cells import Cell
from harness.config import ConfigError, config_to_dict, parse_config
from harness.registry import UnknownNameError, did_you_mean
from harness.training import TrainingConfig
from methods import METHODS
from scenarios import STREAMS, parse_scenario

GRIDS_DIR = Path(__file__).parent / "grids"
EXPERIMENT_KEYS = {"tag", "methods", "streams", "scenarios", "backbone", "backbones", "seeds", "training"}
DEFAULT_KEYS = EXPERIMENT_KEYS - {"tag", "methods", "streams", "scenarios"}


@dataclass(frozen=True)
class Filters:
    """Command-line narrowing and overrides of a grid."""

    methods: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    seeds: int | None = None
    scale: float = 1.0
    only: tuple[str, ...] = ()  # experiment tags, or tag prefixes ending at a "-" (psp-fig3: psp-fig3-table too)
    max_tasks: int | None = None  # cap every discrete stream's task count (a quick look)


def tag_selected(tag: str, only: tuple[str, ...]) -> bool:
    return not only or any(tag == wanted or tag.startswith(f"{wanted}-") for wanted in only)


def grid_names() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def locate_grid(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"grid file {name_or_path} does not exist")
        return path
    candidate = GRIDS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown grid {name_or_path!r}{did_you_mean(name_or_path, grid_names())}; "
            f"known: {', '.join(grid_names())} (or a path to a .yaml file)"
        )
    return candidate


def load_grid_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"grid file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict) or not (_non_empty_list(data.get("experiments")) or data.get("include")):
        raise ConfigError(f"grid file {path} must be a mapping with a non-empty list under 'experiments'")
    if not isinstance(data.get("experiments", []), list):
        raise ConfigError(f"grid file {path}: 'experiments' must be a list")
    if "include" in data and not (
        _non_empty_list(data["include"]) and all(isinstance(i, str) for i in data["include"])
    ):
        raise ConfigError(f"grid file {path}: 'include' must be a list of grid names or files")
    unknown = set(data) - {"name", "description", "defaults", "experiments", "include"}
    if unknown:
        raise ConfigError(f"grid file {path}: unknown top-level key(s) {sorted(unknown)}")
    return data


def _non_empty_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value)


def _as_list(value: Any, where: str, what: str) -> list[Any]:
    if value is None:
        raise ConfigError(f"{where}: missing '{what}'")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where}: '{what}' is empty")
    return items


def _named(entry: Any, where: str, what: str) -> tuple[str, dict[str, Any]]:
    """'name' or {name: ..., setting: value, ...} -> (name, settings)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        settings = dict(entry)
        return settings.pop("name"), settings
    raise ConfigError(f"{where}: each of '{what}' must be a name or a mapping with a 'name', got {entry!r}")


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        return list(value)
    raise ConfigError(f"{where}: seeds must be a count >= 1 or a list of integers, got {value!r}")


def _check_backbone(method: str, cls: Any, backbone: Any, where: str) -> None:
    if backbone.kind not in cls.backbones:
        raise ConfigError(
            f"{where}: method {method} cannot build the {backbone.kind} backbone {backbone.name} "
            f"(its layer kit builds {' and '.join(sorted(cls.backbones))} layers)"
        )


def _check_loss_outputs(method: str, cls: Any, scenario: str, training: TrainingConfig, where: str) -> None:
    """A training-loss protocol other than "all" needs GNu's k*l outputs and a method that implements it."""
    rule = training.loss_outputs
    if rule == "all":
        return
    if scenario != "GNu":
        raise ConfigError(
            f"{where}: training loss_outputs {rule!r} applies to GNu (k*l-way labels) only, not {scenario}; "
            "use 'all' there"
        )
    if rule not in cls.loss_outputs:
        raise ConfigError(
            f"{where}: method {method} does not support training loss_outputs {rule!r} "
            f"(it supports {', '.join(sorted(cls.loss_outputs))})"
        )


def _check_weight_decay(method: str, cls: Any, training: TrainingConfig, where: str) -> None:
    """L2 decay erodes whatever a step's gradient leaves at zero: refused for methods that keep finished tasks' state
    (contexts, factors) in the tensors they train."""
    if training.weight_decay and not cls.takes_weight_decay:
        raise ConfigError(
            f"{where}: method {method} does not take training weight_decay (it keeps finished tasks' state in the "
            f"tensors it trains, which decay would erode); set weight_decay: 0, got {training.weight_decay}"
        )


def _check_available(method: str, cls: Any, where: str) -> None:
    problem = cls.unavailable()
    if problem:
        raise ConfigError(f"{where}: method {method} cannot run here: {problem}")


def _lookup(registry: Any, name: str, where: str) -> Any:
    try:
        return registry.get(name)
    except UnknownNameError as error:
        raise ConfigError(f"{where}: {error}") from None


def expand_grid(name_or_path: str, filters: Filters = Filters()) -> list[Cell]:
    """Parse, validate and expand a grid into unique cells; every error is a one-line ConfigError."""
    _validate_filters(filters)
    path = locate_grid(name_or_path)
    grid_name = str(load_grid_file(path).get("name") or path.stem)
    cells: dict[str, Cell] = {}
    tags: list[str] = []
    _expand_file(path, grid_name, filters, cells, tags, ())
    if filters.only and not any(tag_selected(tag, filters.only) for tag in tags):
        raise ConfigError(f"--only {','.join(filters.only)}: no experiment has that tag; tags: {', '.join(tags)}")
    if not cells:
        raise ConfigError(f"grid {grid_name}: no cells left after the --methods/--streams/--scenarios filters")
    return list(cells.values())


def grid_tags(name_or_path: str) -> list[str]:
    """Every experiment tag of a grid, included grids' too, in order."""
    tags: list[str] = []
    path = locate_grid(name_or_path)
    _expand_file(path, "", Filters(), {}, tags, ())
    return tags


def _expand_file(
    path: Path, grid_name: str, filters: Filters, cells: dict[str, Cell], tags: list[str], including: tuple[Path, ...]
) -> None:
    data = load_grid_file(path)
    name = str(data.get("name") or path.stem)
    if path.resolve() in including:
        raise ConfigError(f"grid {name} includes itself (through {' -> '.join(p.stem for p in including)})")
    for included in data.get("include", []):
        _expand_file(locate_grid(included), grid_name, filters, cells, tags, (*including, path.resolve()))
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - DEFAULT_KEYS:
        raise ConfigError(f"grid {name}: 'defaults' may hold only {sorted(DEFAULT_KEYS)}")
    for index, experiment in enumerate(data.get("experiments", [])):
        if not isinstance(experiment, dict):
            raise ConfigError(f"grid {name}, experiment {index + 1}: must be a mapping, got {experiment!r}")
        where = f"grid {name}, experiment {experiment.get('tag', index + 1)!r}"
        unknown = set(experiment) - EXPERIMENT_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, sorted(EXPERIMENT_KEYS))}")
        spec = {**defaults, **experiment}
        tags.append(str(spec.get("tag", "")))
        expanded = _expand_experiment(grid_name, where, spec, filters)  # validates even what --only leaves out
        if not tag_selected(str(spec.get("tag", "")), filters.only):
            continue
        for cell in expanded:
            if cell.cell_id in cells:
                merged = tuple(dict.fromkeys(cells[cell.cell_id].tags + cell.tags))
                cells[cell.cell_id] = dataclasses.replace(cells[cell.cell_id], tags=merged)
            else:
                cells[cell.cell_id] = cell


def _validate_filters(filters: Filters) -> None:
    for name in filters.methods:
        _lookup(METHODS, name, "--methods")
    for name in filters.streams:
        _lookup(STREAMS, name, "--streams")
    for name in filters.scenarios:
        try:
            parse_scenario(name)
        except UnknownNameError as error:
            raise ConfigError(f"--scenarios: {error}") from None
    if filters.seeds is not None and filters.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {filters.seeds}")
    if not filters.scale > 0:
        raise ConfigError(f"--scale must be > 0, got {filters.scale}")
    if filters.max_tasks is not None and filters.max_tasks < 1:
        raise ConfigError(f"--max-tasks must be >= 1, got {filters.max_tasks}")


def _expand_experiment(grid: str, where: str, spec: dict[str, Any], filters: Filters) -> list[Cell]:
    tag = str(spec.get("tag", ""))
    training = parse_config(TrainingConfig, spec.get("training"), f"{where}, training")
    if filters.scale != 1.0 and training.probe_every:
        training = dataclasses.replace(training, probe_every=max(1, round(training.probe_every * filters.scale)))
    if "backbone" in spec and "backbones" in spec:
        raise ConfigError(f"{where}: give 'backbone' or 'backbones', not both")
    backbones = [
        parse_backbone(b, where) for b in _as_list(spec.get("backbones", spec.get("backbone")), where, "backbone")
    ]
    seeds = list(range(filters.seeds)) if filters.seeds else _seeds(spec.get("seeds", 1), where)

    methods = []
    for entry in _as_list(spec.get("methods"), where, "methods"):
        name, settings = _named(entry, where, "methods")
        cls = _lookup(METHODS, name, where)
        methods.append((name, cls, parse_config(cls.Config, settings, f"{where}, method {name}")))
    streams = []
    for entry in _as_list(spec.get("streams"), where, "streams"):
        name, settings = _named(entry, where, "streams")
        cls = _lookup(STREAMS, name, where)
        config = parse_config(cls.Config, settings, f"{where}, stream {name}")
        if filters.scale != 1.0:
            config = cls.scaled(config, filters.scale)
        if filters.max_tasks is not None:
            config = cls.capped(config, filters.max_tasks)
        streams.append((name, config))
    scenarios = []
    for name in _as_list(spec.get("scenarios"), where, "scenarios"):
        try:
            scenarios.append(parse_scenario(str(name)))
        except UnknownNameError as error:
            raise ConfigError(f"{where}: {error}") from None

    for method_name, cls, _ in methods:
        for scenario in scenarios:
            if scenario.value not in cls.scenarios:
                raise ConfigError(
                    f"{where}: method {method_name} does not support scenario {scenario.value} "
                    f"(it supports {', '.join(sorted(cls.scenarios))})"
                )
            _check_loss_outputs(method_name, cls, scenario.value, training, where)
            _check_weight_decay(method_name, cls, training, where)
        for backbone in backbones:
            _check_backbone(method_name, cls, backbone, where)

    cells = []
    for method_name, cls, method_config in methods:
        if filters.methods and method_name not in filters.methods:
            continue
        _check_available(method_name, cls, where)
        for stream_name, stream_config in streams:
            if filters.streams and stream_name not in filters.streams:
                continue
            for scenario in scenarios:
                if filters.scenarios and scenario.value not in filters.scenarios:
                    continue
                for backbone in backbones:
                    for seed in seeds:
                        cells.append(
                            _cell(
                                grid,
                                tag,
                                method_name,
                                cls.version,
                                method_config,
                                stream_name,
                                stream_config,
                                scenario.value,
                                backbone,
                                training,
                                seed,
                            )
                        )
    return cells


def _cell(
    grid: str,
    tag: str,
    method: str,
    method_version: str,
    method_config: Any,
    stream: str,
    stream_config: Any,
    scenario: str,
    backbone: Any,
    training: Any,
    seed: int,
) -> Cell:
    return Cell(
        grid=grid,
        tags=(tag,) if tag else (),
        method=method,
        method_version=method_version,
        method_config=config_to_dict(method_config),
        stream=stream,
        stream_config=config_to_dict(stream_config),
        scenario=scenario,
        backbone=config_to_dict(backbone),
        training=config_to_dict(training),
        seed=seed,
    )


def make_cell(
    method: str,
    stream: str,
    scenario: str,
    *,
    method_settings: dict[str, Any] | None = None,
    stream_settings: dict[str, Any] | None = None,
    backbone: Any = "lenet_300_100",
    training: dict[str, Any] | None = None,
    seed: int = 0,
    grid: str = "adhoc",
) -> Cell:
    """One validated cell without a grid file (tests, benchmarks, notebooks)."""
    where = f"cell {method}/{stream}/{scenario}"
    method_cls = _lookup(METHODS, method, where)
    stream_cls = _lookup(STREAMS, stream, where)
    try:
        scenario_value = parse_scenario(scenario).value
    except UnknownNameError as error:
        raise ConfigError(f"{where}: {error}") from None
    if scenario_value not in method_cls.scenarios:
        raise ConfigError(f"{where}: method {method} does not support scenario {scenario_value}")
    spec = parse_backbone(backbone, where)
    _check_backbone(method, method_cls, spec, where)
    _check_available(method, method_cls, where)
    training_config = parse_config(TrainingConfig, training, f"{where}, training")
    _check_loss_outputs(method, method_cls, scenario_value, training_config, where)
    _check_weight_decay(method, method_cls, training_config, where)
    return _cell(
        grid,
        "",
        method,
        method_cls.version,
        parse_config(method_cls.Config, method_settings, f"{where}, method"),
        stream,
        parse_config(stream_cls.Config, stream_settings, f"{where}, stream"),
        scenario_value,
        spec,
        training_config,
        seed,
    )
