"""Where the harness keeps what it derives and may rebuild: extracted arrays, downloads, third-party state."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "HARNESS_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "continual-harness")


def cache_dir_problem() -> str | None:
    """Why the cache folder cannot be one (it, or a folder above it, is a file), or None; nothing is created."""
    path = cache_dir()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if candidate.is_dir():
                return None
            where = "is a file" if candidate == path else f"is under {candidate}, a file"
            return f"the cache folder {path} (${CACHE_DIR_ENV}, default ~/.cache/continual-harness) {where}"
    return None
