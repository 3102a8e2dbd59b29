"""Avalanche's strategies as harness methods (the ``avalanche`` extra, which ``make test`` installs).

Every ``avalanche:*`` method also runs in every scenario through the registry-parametrised tests
(test_methods.py, test_image_streams.py); here: that the adapter feeds Avalanche exactly the harness's batches,
that its SI fix changes results, that results land beside ours in one leaderboard, and its errors.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import run_synthetic

import methods.avalanche as adapter
from harness.config import ConfigError
from harness.grid import make_cell
from harness.runner import WorkerSettings, run_cell
from harness.scheduler import RunOptions, run_grid
from results.report import write_report

FAST = {"lr": 1e-3, "batch_size": 32, "probe_every": 3}
COSINE = {**FAST, "lr_schedule": "cosine", "warmup_steps": 4}


def compared(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The two runs' evaluations side by side (storage aside: its parts are named differently)."""
    merged = first.merge(second, on=["step", "eval_task", "metric"], suffixes=("_first", "_second"))
    assert len(merged) == len(first) == len(second)
    return merged[merged.metric != "storage_bytes"]


@pytest.mark.parametrize(
    ("scenario", "ours", "training"),
    [("GNu", "standard", FAST), ("GNs", "standard", COSINE), ("GG", "multihead", FAST)],
)
def test_naive_trains_on_exactly_the_batches_and_schedule_of_our_loop(scenario: str, ours: str, training: dict) -> None:
    _, theirs = run_synthetic("avalanche:Naive", scenario, steps=10, training=training)
    _, mine = run_synthetic(ours, scenario, steps=10, training=training)
    both = compared(theirs, mine)
    assert (both.metric == "train_loss").sum() == 3 and (both.metric == "probe_accuracy").sum() == 10
    np.testing.assert_array_equal(both.value_first, both.value_second)


def test_the_synaptic_intelligence_fix_changes_results_and_as_shipped_it_is_naive() -> None:
    strong = {"si_lambda": 1e4}
    _, naive = run_synthetic("avalanche:Naive", "GNu", steps=10, training=FAST)
    _, shipped = run_synthetic(
        "avalanche:SynapticIntelligence", "GNu", {**strong, "clone_weights": False}, steps=10, training=FAST
    )
    _, fixed = run_synthetic(
        "avalanche:SynapticIntelligence", "GNu", {**strong, "clone_weights": True}, steps=10, training=FAST
    )
    as_shipped = compared(shipped, naive)
    np.testing.assert_array_equal(as_shipped.value_first, as_shipped.value_second)  # the penalty is always 0
    with_copies = compared(fixed, naive)
    losses = with_copies[with_copies.metric == "train_loss"]
    assert losses.value_first.iloc[0] == losses.value_second.iloc[0], "nothing to consolidate in the first task"
    assert (losses.value_first.iloc[1:] != losses.value_second.iloc[1:]).all(), "no SI penalty in later tasks"
    accuracy = with_copies[with_copies.metric == "accuracy"]
    assert not np.array_equal(accuracy.value_first, accuracy.value_second)


def test_si_plugin_as_shipped_saves_views_on_cpu_and_the_fix_saves_copies() -> None:
    import torch

    modules = adapter.import_avalanche()
    model = torch.nn.Linear(3, 2)

    class Strategy:
        pass

    strategy = Strategy()
    strategy.model = model
    shipped = modules["plugins"].SynapticIntelligencePlugin(si_lambda=1.0)
    fixed = adapter.si_plugin_with_copies(si_lambda=1.0, eps=1e-7)
    for plugin in (shipped, fixed):
        plugin.create_syn_data(model, plugin.ewc_data, plugin.syn_data, set())
        plugin.before_training_iteration(strategy)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(shipped.syn_data["old_theta"]["weight"].data, model.weight.flatten())  # moved with it
    assert torch.equal(fixed.syn_data["old_theta"]["weight"].data + 1.0, model.weight.flatten())


def test_avalanche_and_harness_methods_share_the_tables_and_one_leaderboard_row_set(tmp_path: Path) -> None:
    cells = [
        make_cell(
            method,
            "synthetic",
            "GNs",
            stream_settings={"num_tasks": 3, "steps_per_task": 10},
            backbone={"name": "fc", "hidden": [16]},
            training={**FAST, "probe_every": 0},
            seed=seed,
            grid="side-by-side",
        )
        for method in ("ewc", "avalanche:EWC", "avalanche:Replay")
        for seed in range(2)
    ]
    summary = run_grid(cells, RunOptions(out=tmp_path / "runs", executor="inline", progress=lambda _: None))
    assert (summary.done, summary.failed) == (6, 0)
    runs = pd.read_parquet(tmp_path / "runs" / "runs")
    assert sorted(runs.method.unique()) == ["avalanche:EWC", "avalanche:Replay", "ewc"]
    assert set(runs.method_version[runs.method.str.startswith("avalanche:")]) == {adapter.AvalancheNaive.version}
    markdown = write_report(tmp_path / "runs", tmp_path / "report").markdown.read_text()
    section = markdown.split("## synthetic", 1)[1].split("\n## ", 1)[0]
    for method in ("| ewc", "| avalanche:EWC", "| avalanche:Replay"):
        assert method in section, f"{method} missing from the synthetic GNs table"


def test_without_the_extra_a_cell_is_refused_in_one_line_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ConfigError) as error:
        make_cell("avalanche:LwF", "synthetic", "GG")
    message = str(error.value)
    assert "\n" not in message and "avalanche:LwF cannot run here" in message and ".[avalanche]" in message
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.5.0")
    with pytest.raises(ConfigError, match=r"avalanche-lib 0\.5\.0 is installed; these adapters need 0\.6\.0"):
        make_cell("avalanche:LwF", "synthetic", "GG")


def test_nns_is_refused_since_strategies_need_task_boundaries() -> None:
    with pytest.raises(ConfigError, match="does not support scenario NNs"):
        make_cell("avalanche:Naive", "synthetic", "NNs")


def test_a_segment_too_large_for_memory_fails_the_cell_with_the_setting_to_change() -> None:
    cell = make_cell(
        "avalanche:Naive",
        "synthetic",
        "GNs",
        method_settings={"max_segment_gib": 1e-9},
        stream_settings={"num_tasks": 2, "steps_per_task": 5},
        backbone={"name": "fc", "hidden": [16]},
        training=FAST,
    )
    run = run_cell(cell, WorkerSettings(data_dir=None, device="cpu", threads=1)).run
    assert run["status"] == "failed" and "exceeds max_segment_gib=1e-09" in run["error"]


def test_importing_avalanche_writes_nothing_in_home(tmp_path: Path) -> None:
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    code = "import methods.avalanche as a, os; a.import_avalanche(); print(os.environ['HOME'])"
    env = {**os.environ, "HOME": str(home), "HARNESS_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(home), "HOME was not restored"
    assert list(home.iterdir()) == []
    assert (cache / "avalanche-home" / ".avalanche" / "config.json").is_file()
