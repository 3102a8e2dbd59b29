"""Shared fixtures: the real datasets beside the project, a private cache for every test session, and outside
packages that register plugins through entry points."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Extract datasets into a cache of the session's own, never the user's."""
    os.environ["HARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("harness-cache"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real MNIST and Fashion-MNIST: $HARNESS_DATA_DIR, else ../shared/datasets beside the repository."""
    configured = os.environ.get("HARNESS_DATA_DIR")
    path = Path(configured) if configured else SHARED_DATA
    assert (path / "MNIST" / "raw").is_dir(), f"real MNIST expected in {path}/MNIST/raw (set HARNESS_DATA_DIR)"
    return path


REAL_DATASETS = ("MNIST", "FashionMNIST")  # tests count on their real contents (e.g. each digit's test examples)


@pytest.fixture(scope="session")
def data_dir(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with every registered dataset: the real MNIST family (linked) and, for every other one, the
    small fake in its real on-disk format that its registry entry writes."""
    from scenarios import DATASETS

    root = tmp_path_factory.mktemp("data")
    for name in DATASETS.names():
        if name in REAL_DATASETS:
            (root / name).symlink_to(real_data_dir / name, target_is_directory=True)
        else:
            DATASETS.get(name).write_fake(root)
    return root


@pytest.fixture
def outside_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str, str, str], None]:
    """``install(registry, group, module, source)``: an installed package, for this test only, whose module
    (``source``) is named by an entry point of ``group``; ``registry`` loads it on its next lookup and forgets
    it after the test."""

    def install(registry: Any, group: str, module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(source)
        info = tmp_path / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{module} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        monkeypatch.delitem(sys.modules, module, raising=False)

    return install
