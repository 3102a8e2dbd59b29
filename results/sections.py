"""The report's grouping layer: cells into leaderboard rows (cells that differ only in their seed) and rows into
one section per stream x scenario, each row with the statistics over its seeds of every registered column.

Cells that differ in anything else (method version or settings, backbone, stream or training settings) are
separate rows, never averaged together; rows of one protocol are ranked together, never against another
protocol's. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from results.columns import COLUMNS, columns
from results.derive import IDENTITY
from results.protocol import describe_protocol, settings_of
from results.references import Reference, references_for
from results.statistics import mean_and_interval

RANK_BY = "accuracy"  # the column whose mean orders a section's rows (within a protocol and backbone)


@dataclass
class Row:
    label: str
    method: str
    version: str
    backbone: str
    cells: pd.DataFrame  # one per seed
    stats: dict[str, tuple[float, float, float]]  # column -> (mean, low, high)
    references: list[Reference]
    tags: list[str]
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol_text(self) -> str:
        return describe_protocol(self.protocol)

    @property
    def seeds(self) -> int:
        return len(self.cells)

    def approximate(self, column: str) -> bool:
        """Whether some seed's value of the column is approximate (:attr:`ColumnSpec.approximate`)."""
        return any(column in names for names in self.cells["approximate"])


@dataclass
class Section:
    stream: str
    scenario: str
    rows: list[Row]
    images: dict[str, str] = field(default_factory=dict)  # kind -> file name

    @property
    def anchor(self) -> str:
        return f"{self.stream}-{self.scenario}"


def _tags(raw: Any) -> list[str]:
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return [t for t in raw.split(",") if t]
        return list(value) if isinstance(value, list) else [str(value)]
    return list(raw) if raw is not None else []


def _group_tags(group: pd.DataFrame) -> list[str]:
    return sorted({t for raw in group["tags"] for t in _tags(raw)})


def _varying(groups: list[pd.DataFrame], column: str) -> set[str]:
    """Setting names whose values differ between the groups (all keys when some group lacks one)."""
    dicts = [settings_of(g[column].iloc[0]) for g in groups]
    keys = set().union(*dicts) if dicts else set()
    return {k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1}


def _label(group: pd.DataFrame, method_keys: set[str], stream_keys: set[str], training_keys: set[str]) -> str:
    first = group.iloc[0]
    parts = []
    for column, keys in (("method_config", method_keys), ("stream_config", stream_keys), ("training", training_keys)):
        settings = settings_of(first[column])
        parts += [f"{k}={json.dumps(settings.get(k))}" for k in sorted(keys) if k in settings]
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{first['method']}{detail}"


def _row_label(group: pd.DataFrame, groups: list[pd.DataFrame]) -> str:
    """The method, with the settings that tell this row from the section's other rows of that method."""
    first = group.iloc[0]
    same_method = [g for g in groups if g["method"].iloc[0] == first["method"]]
    # settings name a row only where the tags (the figure it belongs to) do not already tell rows apart
    same_tags = [g for g in same_method if _group_tags(g) == _group_tags(group)]
    label = _label(
        group,
        _varying(same_method, "method_config"),
        _varying(same_tags, "stream_config"),
        _varying(same_tags, "training"),
    )
    if len({g["method_version"].iloc[0] for g in same_method}) > 1:
        label += f" [v{first['method_version']}]"
    return label


def _row(stream: str, scenario: str, group: pd.DataFrame, groups: list[pd.DataFrame]) -> Row:
    first = group.iloc[0]
    stats = {column.name: mean_and_interval(group[column.name].to_numpy(float)) for column in columns()}
    references = references_for(
        stream, scenario, first["method"], settings_of(first["method_config"]), first["backbone_label"]
    )
    version, backbone, tags = str(first["method_version"]), first["backbone_label"], _group_tags(group)
    label, protocol = _row_label(group, groups), dict(first["protocol"])
    return Row(label, first["method"], version, backbone, group, stats, references, tags, protocol)


def _rank(row: Row) -> tuple[str, str, float, str]:
    """Protocol, then backbone, then the best ``RANK_BY`` first (a row without one last), then the label."""
    mean = row.stats[RANK_BY][0]
    better_first = -mean if COLUMNS.get(RANK_BY).higher_is_better else mean
    return row.protocol_text, row.backbone, better_first if np.isfinite(mean) else float("inf"), row.label


def build_sections(cells: pd.DataFrame) -> list[Section]:
    """One section per stream x scenario (sorted), its rows ranked by :func:`_rank`."""
    sections: list[Section] = []
    if cells.empty:
        return sections
    for (stream, scenario), table in cells.groupby(["stream", "scenario"], sort=True):
        groups = [g for _, g in table.groupby(IDENTITY[2:], sort=False, dropna=False)]
        rows = sorted((_row(stream, scenario, g, groups) for g in groups), key=_rank)
        sections.append(Section(str(stream), str(scenario), rows))
    return sections
