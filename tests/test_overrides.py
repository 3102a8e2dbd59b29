"""--set and --method: command-line changes to any grid, validated like the YAML (harness/overrides.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError
from harness.grid import Filters, expand_grid
from harness.overrides import parse_added_method, parse_override, parse_value

GRID = """
name: tiny
defaults:
  backbone: {name: fc, hidden: [8]}
  training: {lr: 0.01}
experiments:
  - tag: gg
    methods: [standard, {name: ewc, ewc_lambda: 100}]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 3}]
    scenarios: [GG]
  - tag: gnu
    methods: [{name: supsup, output_size: 20}]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 3}]
    scenarios: [GNu]
"""


@pytest.fixture
def grid(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(GRID)
    return str(path)


def cells_with(grid: str, *settings: str, methods: tuple[str, ...] = (), **filters: object) -> list:
    return expand_grid(
        grid,
        Filters(
            settings=tuple(parse_override(text) for text in settings),
            added_methods=tuple(parse_added_method(text) for text in methods),
            **filters,
        ),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 1e-3), ("3", 3), ("true", True), ("[256, 256]", [256, 256]), ("adam", "adam"), ("null", None)],
)
def test_a_value_is_read_as_yaml_and_what_reads_as_a_number_is_one(text: str, value: object) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_training_applies_to_every_experiment_over_the_grids_value(grid: str) -> None:
    plain = cells_with(grid)
    changed = cells_with(grid, "training.lr=1e-3", "defaults.training.batch_size=16")
    assert {c.training["lr"] for c in plain} == {0.01}
    assert {(c.training["lr"], c.training["batch_size"]) for c in changed} == {(1e-3, 16)}
    assert len(changed) == len(plain) and not {c.cell_id for c in changed} & {c.cell_id for c in plain}


def test_a_methods_setting_changes_that_method_only(grid: str) -> None:
    plain = {c.method: c for c in cells_with(grid)}
    changed = {c.method: c for c in cells_with(grid, "methods.ewc.ewc_lambda=5", "methods.supsup.output_size=30")}
    assert changed["ewc"].method_config["ewc_lambda"] == 5.0 and changed["supsup"].method_config["output_size"] == 30
    assert changed["standard"].cell_id == plain["standard"].cell_id  # untouched cells keep their ids (resume)


def test_streams_seeds_and_backbone(grid: str) -> None:
    cells = cells_with(grid, "streams.synthetic.num_tasks=3", "seeds=[4, 7]", "backbone={name: fc, hidden: [16, 16]}")
    assert {c.stream_config["num_tasks"] for c in cells} == {3}
    assert sorted({c.seed for c in cells}) == [4, 7]
    assert {tuple(c.backbone["hidden"]) for c in cells} == {(16, 16)}


def test_an_added_method_joins_every_experiment_whose_scenario_it_supports(grid: str) -> None:
    cells = cells_with(grid, methods=("psp_binary:learn_contexts=true", "hopsupsup"))
    assert {(c.method, c.scenario) for c in cells if c.method in ("psp_binary", "hopsupsup")} == {
        ("psp_binary", "GG"),
        ("hopsupsup", "GNu"),
    }
    assert {c.method_config["learn_contexts"] for c in cells if c.method == "psp_binary"} == {True}
    narrowed = expand_grid(grid, Filters(methods=("standard",), added_methods=(parse_added_method("hopsupsup"),)))
    assert {c.method for c in narrowed} == {"standard", "hopsupsup"}  # --methods narrows the grid's, keeps the added


def test_an_added_method_equal_to_the_grids_own_is_one_cell(grid: str) -> None:
    plain = cells_with(grid, only=("gg",))
    assert {c.cell_id for c in cells_with(grid, methods=("standard",), only=("gg",))} == {c.cell_id for c in plain}


@pytest.mark.parametrize(
    ("settings", "methods", "expected"),
    [
        (("methods.si.c=1",), (), "--set methods.si.c=1: no experiment of this grid has method si"),
        (("streams.split_mnist.num_tasks=2",), (), "no experiment of this grid has stream split_mnist"),
        (("methods.ewc.gamma=2",), (), "gamma must be <= 1"),
        ((), ("supsup:output_size=-1",), "--method supsup:output_size=-1: method supsup: output_size must be >= 0"),
        ((), ("separate_heads",), "--method separate_heads: no selected experiment has a scenario"),
    ],
)
def test_bad_overrides_are_one_line_before_any_work(
    grid: str, settings: tuple[str, ...], methods: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        cells_with(grid, *settings, methods=methods, only=("gnu",) if methods == ("separate_heads",) else ())
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_the_dry_run_names_the_changes(grid: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    args = ["run", "--grid", grid, "--dry-run", "--set", "training.lr=1e-3", "--method", "psp_binary"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the grid tiny with --set training.lr=1e-3, --method psp_binary\n")
    assert "psp_binary/synthetic/GG/seed0" in out and "psp_binary/synthetic/GNu" not in out
