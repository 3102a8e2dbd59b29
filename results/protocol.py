"""The protocol of a result: the settings that decide whether two numbers may be compared at all.

Input scaling and padding, whether PermutedMNIST's first task is permuted, and
which outputs enter GNu's training loss move class-incremental accuracy by tens
of points (issue 12), so a leaderboard row names its protocol, rows of two
protocols are never averaged, and a published number is set beside a row, with
a difference, only when the row follows the protocol that produced it.

Settings are read from a run's JSON columns; a setting a row lacks (a stream
that has no such choice, or a run written before the setting existed) has its
harness default. ``tests/test_protocol.py`` ties these defaults to the configs.
No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProtocolSetting:
    column: str  # the runs table's JSON column that holds it
    name: str
    default: Any
    describe: str  # how a non-default value reads in a row, with {value}


PROTOCOL_SETTINGS = (
    ProtocolSetting("stream_config", "input_scaling", "standardise", "{value} inputs"),
    ProtocolSetting("stream_config", "pad_to", 0, "padded to {value}"),
    ProtocolSetting("stream_config", "first_task_unpermuted", True, "first task permuted"),
    ProtocolSetting("training", "loss_outputs", "all", "loss over {value} outputs"),
)
HARNESS_PROTOCOL = "harness"  # how a row on every default reads


def settings_of(raw: Any) -> dict[str, Any]:
    """A runs-table JSON column's settings as a dict ({} when empty)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def protocol_of(run: Mapping[str, Any]) -> dict[str, Any]:
    """Every protocol setting of a run (a runs-table row, or a mapping with its JSON columns), defaults filled in."""
    columns = {column: settings_of(run.get(column)) for column in {s.column for s in PROTOCOL_SETTINGS}}
    return {s.name: columns[s.column].get(s.name, s.default) for s in PROTOCOL_SETTINGS}


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    """A short reading of the settings that differ from the harness's defaults ("harness" when none does)."""
    parts = [
        s.describe.format(value=protocol[s.name])
        for s in PROTOCOL_SETTINGS
        if s.name in protocol and protocol[s.name] != s.default
    ]
    return ", ".join(parts) or HARNESS_PROTOCOL


def protocol_differences(protocol: Mapping[str, Any], required: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{setting: (the row's value, the required value)} for every required setting the row does not follow."""
    return {name: (protocol.get(name), value) for name, value in required.items() if protocol.get(name) != value}
