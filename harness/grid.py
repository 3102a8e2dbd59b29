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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backbones import parse_backbone
from harness.cells import Cell
from harness.config import INT64, ConfigError, config_to_dict, parse_config, shown
from harness.grid_files import (  # noqa: F401  (re-exported: the grid API)
    GRIDS_DIR,
    MAX_GRID_BYTES,
    grid_name_of,
    grid_names,
    load_grid_file,
    locate_grid,
)
from harness.overrides import AddedMethod, Override, apply_overrides, check_all_used
from harness.registry import UnknownNameError, did_you_mean
from harness.training import TrainingConfig
from methods import METHODS
from scenarios import STREAMS, parse_scenario

EXPERIMENT_KEYS = {"tag", "methods", "streams", "scenarios", "backbone", "backbones", "seeds", "training"}
DEFAULT_KEYS = EXPERIMENT_KEYS - {"tag", "methods", "streams", "scenarios"}
DEFAULT_BACKBONE = "lenet_300_100"  # an experiment (and the grid's defaults) naming no backbone: SupSup's LeNet
# Bounds that keep a mistaken grid from hanging validation (the paper grid: 147 cells)
MAX_CELLS = 100_000  # cells one grid may expand to (before duplicates merge)
MAX_SCALE = 1000.0


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
    settings: tuple[Override, ...] = ()  # --set KEY=VALUE, applied over every experiment (harness/overrides.py)
    added_methods: tuple[AddedMethod, ...] = ()  # --method NAME[:k=v,...], added to every experiment


def tag_selected(tag: str, only: tuple[str, ...]) -> bool:
    return not only or any(tag == wanted or tag.startswith(f"{wanted}-") for wanted in only)


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
    """A count (seeds 0..N-1) or a list of seeds, each stored as a signed 64-bit integer and so in [0, 2**63)."""
    accepted = f"a count >= 1 (at most {MAX_CELLS:,}) or a list of integers between 0 and 2**63 - 1"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CELLS:
        return list(range(value))
    if isinstance(value, list) and value and len(value) <= MAX_CELLS:
        for seed in value:
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < INT64:
                raise ConfigError(f"{where}: seeds must be {accepted}; seed {shown(seed)} is not")
        return list(value)
    raise ConfigError(f"{where}: seeds must be {accepted}, got {shown(value)}")


def _tag(value: Any, where: str) -> str:
    """An experiment's tag: a string (or number) without commas, since a runs row stores its tags comma-joined."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{where}: tag must be a string, got {shown(value)}")
    tag = str(value)
    if "," in tag:
        raise ConfigError(
            f"{where}: tag {shown(tag)} may not contain a comma (a cell's tags are stored comma-separated); "
            "use '-' or '_'"
        )
    return tag


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


@dataclass
class _Expansion:
    """What expanding a grid (and the grids it includes) collects."""

    cells: dict[str, Cell] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    built: int = 0  # cells built so far, before duplicates merge: at most MAX_CELLS
    used: set[str] = field(default_factory=set)  # the --set overrides that found their target
    added_cells: dict[str, int] = field(default_factory=dict)  # cells of each --method in the selected experiments


def expand_grid(name_or_path: str, filters: Filters = Filters()) -> list[Cell]:
    """Parse, validate and expand a grid into unique cells; every error is a one-line ConfigError."""
    _validate_filters(filters)
    path = locate_grid(name_or_path)
    data = load_grid_file(path)  # read and parsed once
    grid_name = grid_name_of(data, path)
    expansion = _Expansion()
    _expand_file(path, grid_name, filters, expansion, (), data)
    tags = expansion.tags
    if filters.only and not any(tag_selected(tag, filters.only) for tag in tags):
        raise ConfigError(f"--only {','.join(filters.only)}: no experiment has that tag; tags: {', '.join(tags)}")
    check_all_used(filters.settings, expansion.used)
    for added in filters.added_methods:
        if not expansion.added_cells.get(added.text):
            supported = ", ".join(sorted(METHODS.get(added.name).scenarios))
            raise ConfigError(
                f"--method {added.text}: no selected experiment has a scenario and backbone it supports "
                f"(it supports {supported})"
            )
    if not expansion.cells:
        raise ConfigError(f"grid {grid_name}: no cells left after the --methods/--streams/--scenarios filters")
    return list(expansion.cells.values())


def grid_tags(name_or_path: str) -> list[str]:
    """Every experiment tag of a grid, included grids' too, in order."""
    expansion = _Expansion()
    _expand_file(locate_grid(name_or_path), "", Filters(), expansion, ())
    return expansion.tags


def _expand_file(
    path: Path,
    grid_name: str,
    filters: Filters,
    expansion: _Expansion,
    including: tuple[Path, ...],
    data: dict[str, Any] | None = None,
) -> None:
    data = load_grid_file(path) if data is None else data
    name = grid_name_of(data, path)
    if path.resolve() in including:
        raise ConfigError(f"grid {name} includes itself (through {' -> '.join(p.stem for p in including)})")
    for included in data.get("include", []):
        _expand_file(locate_grid(included), grid_name, filters, expansion, (*including, path.resolve()))
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - DEFAULT_KEYS:
        raise ConfigError(f"grid {name}: 'defaults' may hold only {sorted(DEFAULT_KEYS)}")
    cells = expansion.cells
    for index, experiment in enumerate(data.get("experiments", [])):
        if not isinstance(experiment, dict):
            raise ConfigError(f"grid {name}, experiment {index + 1}: must be a mapping, got {shown(experiment)}")
        where = f"grid {name}, experiment {shown(experiment.get('tag', index + 1))}"
        unknown = sorted(str(key) for key in experiment if key not in EXPERIMENT_KEYS)
        if unknown:
            key = unknown[0]
            raise ConfigError(f"{where}: unknown key {shown(key)}{did_you_mean(key, sorted(EXPERIMENT_KEYS))}")
        spec = apply_overrides({**defaults, **experiment}, filters.settings, expansion.used)
        tag = _tag(spec.get("tag"), where)
        expansion.tags.append(tag)
        room = MAX_CELLS - expansion.built
        expanded, added_cells = _expand_experiment(grid_name, where, spec, filters, room)  # validates all
        expansion.built += len(expanded)
        if not tag_selected(tag, filters.only):
            continue
        for text, count in added_cells.items():
            expansion.added_cells[text] = expansion.added_cells.get(text, 0) + count
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
    if filters.seeds is not None and filters.seeds > MAX_CELLS:
        raise ConfigError(
            f"--seeds must be at most {MAX_CELLS:,} (the most cells a grid may have), got {filters.seeds}"
        )
    if not (math.isfinite(filters.scale) and 0 < filters.scale <= MAX_SCALE):
        raise ConfigError(f"--scale must be a finite number > 0 and at most {MAX_SCALE:g}, got {filters.scale}")
    if filters.max_tasks is not None and filters.max_tasks < 1:
        raise ConfigError(f"--max-tasks must be >= 1, got {filters.max_tasks}")


def _expand_experiment(
    grid: str, where: str, spec: dict[str, Any], filters: Filters, room: int = MAX_CELLS
) -> tuple[list[Cell], dict[str, int]]:
    """The experiment's cells, and how many of them each --method (by its text) contributed."""
    tag = _tag(spec.get("tag"), where)
    training = parse_config(TrainingConfig, spec.get("training"), f"{where}, training")
    if filters.scale != 1.0 and training.probe_every:
        training = dataclasses.replace(training, probe_every=max(1, round(training.probe_every * filters.scale)))
    if "backbone" in spec and "backbones" in spec:
        raise ConfigError(f"{where}: give 'backbone' or 'backbones', not both")
    backbones = [
        parse_backbone(b, where)
        for b in _as_list(spec.get("backbones", spec.get("backbone", DEFAULT_BACKBONE)), where, "backbone")
    ]
    seeds = _seeds(spec.get("seeds", 1), where)  # checked even when --seeds replaces them
    if filters.seeds:
        seeds = list(range(filters.seeds))

    methods = []  # (name, class, config, added): added methods pair only with what they support
    for entry in _as_list(spec.get("methods"), where, "methods"):
        name, settings = _named(entry, where, "methods")
        cls = _lookup(METHODS, name, where)
        methods.append((name, cls, parse_config(cls.Config, settings, f"{where}, method {name}"), None))
    for added in filters.added_methods:
        cls = _lookup(METHODS, added.name, f"--method {added.text}")
        config = parse_config(cls.Config, dict(added.settings), f"--method {added.text}")
        methods.append((added.name, cls, config, added))
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

    pairs = []  # (method, its scenarios, its backbones), each validated
    for method_name, cls, config, added in methods:
        method_scenarios = [s for s in scenarios if not added or s.value in cls.scenarios]
        method_backbones = [b for b in backbones if not added or b.kind in cls.backbones]
        for scenario in method_scenarios:
            if scenario.value not in cls.scenarios:
                raise ConfigError(
                    f"{where}: method {method_name} does not support scenario {scenario.value} "
                    f"(it supports {', '.join(sorted(cls.scenarios))})"
                )
            _check_loss_outputs(method_name, cls, scenario.value, training, where)
            _check_weight_decay(method_name, cls, training, where)
        for backbone in method_backbones:
            _check_backbone(method_name, cls, backbone, where)
        if added or not filters.methods or method_name in filters.methods:
            pairs.append((method_name, cls, config, method_scenarios, method_backbones, added))

    kept_streams = [(name, config) for name, config in streams if not filters.streams or name in filters.streams]
    count = (
        len(seeds)
        * len(kept_streams)
        * sum(
            sum(not filters.scenarios or s.value in filters.scenarios for s in method_scenarios) * len(method_backbones)
            for _, _, _, method_scenarios, method_backbones, _ in pairs
        )
    )
    if count > room:
        raise ConfigError(
            f"{where}: the grid expands to more than {MAX_CELLS:,} cells, the most one grid may have (this experiment "
            f"alone has {count:,}); split it into several grids, or narrow it with --methods, --streams or --seeds"
        )
    cells: list[Cell] = []
    added_cells: dict[str, int] = {}
    for method_name, cls, method_config, method_scenarios, method_backbones, added in pairs:
        kept_scenarios = [s for s in method_scenarios if not filters.scenarios or s.value in filters.scenarios]
        if not (kept_streams and kept_scenarios and method_backbones):
            continue
        _check_available(method_name, cls, where)
        if added:
            added_cells[added.text] = len(seeds) * len(kept_streams) * len(kept_scenarios) * len(method_backbones)
        for stream_name, stream_config in kept_streams:
            for scenario in kept_scenarios:
                for backbone in method_backbones:
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
    return cells, added_cells


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
    backbone: Any = DEFAULT_BACKBONE,
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
    _seeds([seed], where)
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
