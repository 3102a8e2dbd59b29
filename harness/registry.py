"""A typed name -> plugin registry shared by methods, streams and leaderboard columns.

It refuses duplicate names, and an unknown name gets one line that lists the
closest valid ones. Outside packages add entries through an entry-point group,
loaded once on first lookup.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message names the closest valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean: a, b?)' for the closest choices, or '' when none is close."""
    same_but_case = [c for c in choices if c.lower() == name.lower()]
    close = same_but_case + [
        c for c in difflib.get_close_matches(name, choices, n=3, cutoff=0.5) if c not in same_but_case
    ]
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    return f"unknown {kind} {name!r}{did_you_mean(name, choices)}; known: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._entry_point_group = entry_point_group
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            self._entries[name] = entry
            return entry

        return add

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in entry_points(group=self._entry_point_group):
            entry_point.load()  # importing the module runs its @register decorators

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, list(self._entries))) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[T]:
        """The entries in the order they were registered (where order means something, as columns of a table)."""
        self._load_entry_points()
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
