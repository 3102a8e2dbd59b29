"""Bad input gets one clear line and exit status 2 before any work; `harness list` shows the registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import EXIT_BAD_INPUT, main
from harness.grid import grid_names

GOOD_EXPERIMENT = """
  - tag: t
    methods: [standard]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 3}]
    scenarios: [GG]
    backbone: {name: fc, hidden: [8]}
"""


def grid_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return str(path)


def error_of(args: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    code = main([*args, "--out", str(out), "--executor", "inline"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT, err
    assert len(err.splitlines()) == 1 and err.startswith("harness: error: "), err
    assert not list(out.glob("runs/*.parquet")), "no cell may run on bad input"
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--grid", "smokey"], "unknown grid 'smokey' (did you mean: smoke, smoke-images?)"),
        (["--grid", "smoke", "--methods", "ewk"], "unknown method 'ewk' (did you mean: ewc?)"),
        (["--grid", "smoke", "--streams", "permuted_mnits"], "(did you mean: permuted_mnist"),
        (["--grid", "smoke", "--scenarios", "GNS"], "unknown scenario 'GNS' (did you mean: GNs"),
        (["--grid", "smoke", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--grid", "smoke", "--scale", "0"], "--scale must be > 0, got 0.0"),
        (["--grid", "smoke", "--cpus-per-cell", "0"], "--cpus-per-cell must be >= 1"),
        (["--grid", "does/not/exist.yaml"], "grid file does/not/exist.yaml does not exist"),
    ],
)
def test_bad_command_line(args: list[str], expected: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert expected in error_of(["run", *args], capsys, tmp_path / "out")


BAD_GRIDS = {
    "malformed yaml": ("experiments: [\n  - tag: x\n    methods: [standard\n", "is not valid YAML at line"),
    "no experiments": ("name: x\n", "non-empty list under 'experiments'"),
    "unknown method": (
        GOOD_EXPERIMENT.replace("[standard]", "[standrd]"),
        "unknown method 'standrd' (did you mean: standard?)",
    ),
    "unknown stream": (GOOD_EXPERIMENT.replace("synthetic", "synthetc"), "unknown stream 'synthetc'"),
    "unknown scenario": (GOOD_EXPERIMENT.replace("[GG]", "[GX]"), "unknown scenario 'GX'"),
    "unsupported pairing": (
        GOOD_EXPERIMENT.replace("[standard]", "[multihead]").replace("[GG]", "[GG, GNs]"),
        "method multihead does not support scenario GNs (it supports GG)",
    ),
    "wrong type": (
        GOOD_EXPERIMENT.replace("num_tasks: 2", "num_tasks: two"),
        "stream synthetic: num_tasks must be an integer, got 'two'",
    ),
    "out of range": (
        GOOD_EXPERIMENT.replace("steps_per_task: 3", "steps_per_task: 0"),
        "steps_per_task must be >= 1, got 0",
    ),
    "negative lr": (GOOD_EXPERIMENT + "    training: {lr: -1}\n", "training: lr must be >= 0.0, got -1.0"),
    "misspelt setting": (
        GOOD_EXPERIMENT.replace("[standard]", "[{name: ewc, ewc_lamda: 5}]"),
        "unknown setting 'ewc_lamda' (did you mean: ewc_lambda?)",
    ),
    "bad method value": (
        GOOD_EXPERIMENT.replace("[standard]", "[{name: ewc, gamma: 2}]"),
        "method ewc: gamma must be <= 1.0, got 2.0",
    ),
    "unknown experiment key": (GOOD_EXPERIMENT + "    sceanrios: [GG]\n", "unknown key 'sceanrios'"),
    "unknown backbone": (GOOD_EXPERIMENT.replace("{name: fc, hidden: [8]}", "lenet"), "unknown backbone 'lenet'"),
    "bad seeds": (GOOD_EXPERIMENT + "    seeds: -1\n", "seeds must be a count >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_bad_grid_file(case: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    text, expected = BAD_GRIDS[case]
    if not text.lstrip().startswith(("name", "experiments")):
        text = "name: bad\nexperiments:" + text
    assert expected in error_of(["run", "--grid", grid_file(tmp_path, text)], capsys, tmp_path / "out")


def test_missing_data_names_the_files_and_the_folder(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "empty-cache"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    err = error_of(
        ["run", "--grid", "smoke", "--data-dir", str(empty), "--methods", "standard", "--streams", "permuted_mnist"],
        capsys,
        tmp_path / "out",
    )
    assert "dataset MNIST not found: put train-images-idx3-ubyte.gz" in err
    assert str(empty / "MNIST" / "raw") in err


def test_unwritable_output_folder(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = error_of(["run", "--grid", grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT)], capsys, blocker / "out")
    assert f"output folder {blocker / 'out'} cannot be written" in err


def test_dry_run_lists_cells_data_and_estimates_and_trains_nothing(
    capsys: pytest.CaptureFixture, tmp_path: Path, real_data_dir: Path
) -> None:
    out_dir = tmp_path / "out"
    assert main(["run", "--grid", "smoke", "--dry-run", "--out", str(out_dir), "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if "tags=smoke" in line]
    assert f"\n{len(listed)} cells; about " in out and "multihead/split_mnist/GG/seed1" in out
    assert len(listed) == len({line.split()[0] for line in listed}) > 50  # one line per distinct cell
    assert all("data=MNIST(present)" in line or "data=FashionMNIST(present)" in line for line in listed)
    assert all("  protocol=harness  " in line for line in listed)  # the smoke grid keeps every default
    assert f"MNIST: present in {real_data_dir / 'MNIST' / 'raw'}" in out
    hours = [float(line.rsplit("est=", 1)[1].rstrip("h")) for line in listed]
    assert all(h > 0 for h in hours) and "smoke-gg: " in out
    assert not out_dir.exists()


def test_only_picks_experiments_by_tag_or_prefix_and_max_tasks_caps_streams(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    assert main(["run", "--grid", "paper", "--dry-run", "--only", "supsup-fig3", "--max-tasks", "4"]) == 0
    out = capsys.readouterr().out
    tags = {line.split("tags=")[1].split()[0] for line in out.splitlines() if "tags=" in line}
    assert tags == {"supsup-fig3-lenet", "supsup-fig3-lenet-gg", "supsup-fig3-fc", "supsup-fig3-fc-gg"}
    from harness.grid import Filters, expand_grid

    capped = expand_grid("paper", Filters(only=("supsup-fig3-lenet",), max_tasks=4))
    assert {c.stream_config["num_tasks"] for c in capped} == {4}
    assert "no experiment has that tag" in error_of(["run", "--grid", "paper", "--only", "fig99"], capsys, tmp_path)


def test_the_paper_grid_is_every_figure_of_both_papers() -> None:
    from harness.grid import grid_tags

    tags = set(grid_tags("paper"))
    figures = {"psp-fig2", "psp-fig3", "psp-fig3-table", "psp-fig4b-fig5", "psp-fig5-right", "psp-fig6b"}
    figures |= {"psp-suppfig2", "supsup-fig2-left", "supsup-fig2-right", "supsup-fig3-lenet", "supsup-fig4"}
    figures |= {"supsup-fig4-nns", "supsup-fig5-left", "supsup-fig5-right", "supsup-fig6", "supsup-hopfield"}
    assert figures <= tags


@pytest.mark.parametrize(
    ("what", "expected"),
    [("methods", "ewc_lambda"), ("streams", "permuted_mnist"), ("scenarios", "GNu"), ("grids", "smoke")],
)
def test_list(what: str, expected: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["list", what]) == 0
    assert expected in capsys.readouterr().out


def test_a_method_without_conv_layers_is_refused_a_conv_backbone(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    experiment = """
  - methods: [psp_rotation]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 5}]
    scenarios: [GG]
    backbone: gem_resnet18
"""
    err = error_of(["run", "--grid", grid_file(tmp_path, "experiments:" + experiment)], capsys, tmp_path / "out")
    assert "method psp_rotation cannot build the conv backbone resnet18 (its layer kit builds fc layers)" in err


@pytest.mark.parametrize("name", grid_names())
def test_every_shipped_grid_validates(name: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["run", "--grid", name, "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert " device-hours on " in capsys.readouterr().out
