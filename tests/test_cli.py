"""Bad input gets one clear line and exit status 2 before any work; `harness list` shows the registries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness.scheduler as scheduler
from harness import __version__
from harness.cli import EXIT_BAD_INPUT, EXIT_OK, duration, main, plural
from harness.estimate import fusion_pays
from harness.grid import MAX_CELLS, grid_names
from results.store import ResultStore

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


def refused_before_work(args: list[str], capsys: pytest.CaptureFixture[str], out: Path, within: float = 10) -> str:
    """One line, exit status 2, within ``within`` seconds, and no output folder made."""
    started = time.monotonic()
    err = error_of(args, capsys, out)
    assert time.monotonic() - started < within, f"took {time.monotonic() - started:.1f}s: {err}"
    assert not out.exists(), "the output folder was made before the input was checked"
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--grid", "smokey"], "unknown grid 'smokey' (did you mean: smoke, smoke-images?)"),
        (["--grid", "smoke", "--methods", "ewk"], "unknown method 'ewk' (did you mean: ewc?)"),
        (["--grid", "smoke", "--streams", "permuted_mnits"], "(did you mean: permuted_mnist"),
        (["--grid", "smoke", "--scenarios", "GNS"], "unknown scenario 'GNS' (did you mean: GNs"),
        (["--grid", "smoke", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--grid", "smoke", "--scale", "0"], "--scale must be a finite number > 0 and at most 1000, got 0.0"),
        (["--grid", "smoke", "--scale", "inf"], "--scale must be a finite number > 0 and at most 1000, got inf"),
        (["--grid", "smoke", "--seeds", str(MAX_CELLS + 1)], f"--seeds must be at most {MAX_CELLS:,}"),
        (["--grid", "smoke", "--cpus-per-cell", "0"], "--cpus-per-cell must be >= 1"),
        (["--grid", "does/not/exist.yaml"], "grid file does/not/exist.yaml does not exist"),
        (["--grid", "smoke", "--set", "training.lrr=1"], "--set training.lrr=1: unknown setting 'lrr'"),
        (["--grid", "smoke", "--set", "training.lr=-1"], "--set training.lr=-1: lr must be >= 0.0, got -1.0"),
        (["--grid", "smoke", "--set", "lr=1"], "--set lr=1: unknown key 'lr'"),
        (["--grid", "smoke", "--set", "training.lr"], "--set training.lr: expected KEY=VALUE"),
        (["--grid", "smoke", "--set", "methods.ewc=1"], "--set methods.ewc=1: methods takes methods.NAME.KEY=VALUE"),
        (["--grid", "smoke", "--set", "methods.ewk.ewc_lambda=1"], "unknown method 'ewk' (did you mean: ewc?)"),
        (["--grid", "smoke", "--set", "streams.rotated_mnist.num_tasks=3"], "no experiment of this grid has stream"),
        (["--grid", "smoke", "--set", "seeds=0"], "seeds must be a count >= 1"),
        (["--grid", "smoke", "--method", "ewc:ewc_lambda=big"], "--method ewc:ewc_lambda=big: method ewc: ewc_lambda"),
        (["--grid", "smoke", "--method", "ewc:lambda=1"], "unknown setting 'lambda'"),
        (["--grid", "smoke", "--only", "smoke-gg", "--method", "hopsupsup"], "no selected experiment has a scenario"),
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
    # issue 14: bad input that used to pass validation and fail every cell, or a traceback
    "negative seed": (GOOD_EXPERIMENT + "    seeds: [-1]\n", "seed -1 is not"),
    "seed beyond int64": (
        GOOD_EXPERIMENT + f"    seeds: [{10**23}]\n",
        f"between 0 and 2**63 - 1; seed {10**23} is not",
    ),
    "too many seeds": (
        GOOD_EXPERIMENT + f"    seeds: {MAX_CELLS + 1}\n",
        f"seeds must be a count >= 1 (at most {MAX_CELLS:,})",
    ),
    "lr nan": (GOOD_EXPERIMENT + "    training: {lr: .nan}\n", "training: lr must be a finite number, got nan"),
    "lr inf": (GOOD_EXPERIMENT + "    training: {lr: .inf}\n", "training: lr must be a finite number, got inf"),
    "lr 'nan'": (GOOD_EXPERIMENT + '    training: {lr: "nan"}\n', "training: lr must be a finite number, got 'nan'"),
    "method float inf": (
        GOOD_EXPERIMENT.replace("[standard]", "[{name: ewc, ewc_lambda: .inf}]"),
        "method ewc: ewc_lambda must be a finite number, got inf",
    ),
    "huge integer setting": (
        GOOD_EXPERIMENT.replace("steps_per_task: 3", f"steps_per_task: {10**20}"),
        "steps_per_task must fit in 64 bits",
    ),
    "empty hidden": (
        GOOD_EXPERIMENT.replace("{name: fc, hidden: [8]}", "{name: fc, hidden: []}"),
        "backbone: hidden must list at least one width for an fc backbone",
    ),
    "training not a mapping": (
        GOOD_EXPERIMENT + "    training: fast\n",
        "training: expected a mapping of settings (name: value, ...), got 'fast'",
    ),
    "method settings not a mapping": (
        "name: bad\ndefaults: {training: [1, 2]}\nexperiments:" + GOOD_EXPERIMENT,
        "training: expected a mapping of settings (name: value, ...), got [1, 2]",
    ),
    "comma in a tag": (
        GOOD_EXPERIMENT.replace("tag: t", 'tag: "fig2,fig3"'),
        "tag 'fig2,fig3' may not contain a comma",
    ),
    "tag not a string": (GOOD_EXPERIMENT.replace("tag: t", "tag: [a, b]"), "tag must be a string, got ['a', 'b']"),
    "typo'd top-level key": (
        "name: bad\nexperimnts:" + GOOD_EXPERIMENT,
        "unknown top-level key 'experimnts' (did you mean: experiments?); accepted: name, description",
    ),
    "name up the tree": ("name: ../../x\nexperiments:" + GOOD_EXPERIMENT, "name '../../x' must be a plain name"),
    "absolute name": ("name: /abs\nexperiments:" + GOOD_EXPERIMENT, "name '/abs' must be a plain name"),
    "name ..": ("name: ..\nexperiments:" + GOOD_EXPERIMENT, "name '..' must be a plain name"),
    "name with a space": ("name: my grid\nexperiments:" + GOOD_EXPERIMENT, "name 'my grid' must be a plain name"),
    "too many cells": (
        GOOD_EXPERIMENT.replace("[GG]", "[GG, GNs]") + f"    seeds: {MAX_CELLS}\n",
        f"the grid expands to more than {MAX_CELLS:,} cells, the most one grid may have (this experiment alone has "
        f"{2 * MAX_CELLS:,})",
    ),
    "recursive alias": (
        "name: bad\ndescription: &d [1, *d]\nexperiments:" + GOOD_EXPERIMENT,
        "the alias *d refers to a value that contains it",
    ),
}

LAUGHS = "".join(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
ALIAS_BOMB = "description:\n  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS
for place, text in {
    "seeds": "name: bomb\n" + ALIAS_BOMB + "experiments:" + GOOD_EXPERIMENT + "    seeds: *l8\n",
    "tag": "name: bomb\n" + ALIAS_BOMB + "experiments:" + GOOD_EXPERIMENT.replace("tag: t", "tag: *l8"),
    "name": ALIAS_BOMB + "name: *l8\nexperiments:" + GOOD_EXPERIMENT,
}.items():
    BAD_GRIDS[f"alias bomb as {place}"] = (text, "holds more than 250,000 values once its YAML aliases are expanded")


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_bad_grid_file(case: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    text, expected = BAD_GRIDS[case]
    if not text.lstrip().startswith(("name", "experiments", "description")):
        text = "name: bad\nexperiments:" + text
    assert expected in refused_before_work(["run", "--grid", grid_file(tmp_path, text)], capsys, tmp_path / "out")


def test_seeds_on_the_command_line_still_check_the_grids_own(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    grid = grid_file(tmp_path, "name: bad\nexperiments:" + GOOD_EXPERIMENT + "    seeds: [-1]\n")
    assert "seed -1 is not" in refused_before_work(["run", "--grid", grid, "--seeds", "2"], capsys, tmp_path / "out")


def test_a_huge_grid_file_is_refused_at_once(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"  # 50 MB, a generated grid of 300k experiments
    path.write_text("name: huge\nexperiments:" + GOOD_EXPERIMENT * (50_000_000 // len(GOOD_EXPERIMENT)))
    err = refused_before_work(["run", "--grid", str(path)], capsys, tmp_path / "out", within=2)
    assert f"grid file {path} is larger than 1,000,000 bytes, the most a grid file may be" in err


def test_a_grid_file_that_is_not_utf8_is_named(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(("name: caf\xe9\nexperiments:" + GOOD_EXPERIMENT).encode("latin-1"))
    err = refused_before_work(["run", "--grid", str(path)], capsys, tmp_path / "out")
    assert f"grid file {path} is not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8" in err


def test_a_folder_given_as_grid_is_called_a_folder(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    folder = tmp_path / "grids"
    folder.mkdir()
    err = refused_before_work(["run", "--grid", str(folder)], capsys, tmp_path / "out")
    assert f"grid file {folder} is a folder, not a YAML file" in err


@pytest.mark.parametrize("where", ["root", "home"])
def test_the_filesystem_root_or_home_is_refused_as_output_folder(
    where: str, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = Path("/") if where == "root" else tmp_path / "home"
    monkeypatch.setattr(ResultStore, "ensure_writable", lambda self: pytest.fail(f"would have written into {out}"))
    code = main(["run", "--grid", grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1, err
    what = "the root of the filesystem" if where == "root" else "your home folder"
    assert f"output folder {out} is {what}; give a folder of its own" in err


def test_a_ray_address_where_nothing_listens_fails_in_seconds(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    grid = grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT.replace("synthetic", "permuted_mnist"))
    args = ["run", "--grid", grid, "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1", "--data-dir", "/x"]
    started = time.monotonic()
    assert main(args) == EXIT_BAD_INPUT  # the Ray executor (the default): inline would not use the address
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 10 and len(err.splitlines()) == 1, err
    assert "cannot reach a Ray cluster at --address '127.0.0.1:1' (Connection refused); start one there" in err
    assert not (tmp_path / "out").exists(), "the output folder was made (and data prepared) first"
    assert main([*args[:-4], "--address", "head-without-port"]) == EXIT_BAD_INPUT
    assert "is not HOST:PORT, ray://HOST:PORT or auto" in capsys.readouterr().err


def test_cuda_on_a_machine_without_it_is_refused_up_front(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    grid = grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT)
    err = refused_before_work(["run", "--grid", grid, "--device", "cuda"], capsys, tmp_path / "out")
    assert "--device cuda asks for a GPU, but torch sees none on this machine" in err


def test_more_cpus_per_cell_than_the_machine_has_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    grid = grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT)
    err = refused_before_work(["run", "--grid", grid, "--cpus-per-cell", "999"], capsys, tmp_path / "out")
    assert f"--cpus-per-cell 999 is more than this machine's {os.cpu_count()} CPUs (os.cpu_count())" in err


def test_a_network_too_big_for_memory_is_refused_before_work(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "_memory_limit", lambda device: (64 * 10**9, "memory on this machine"))
    grid = grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT.replace("hidden: [8]", "hidden: [100000, 100000]"))
    err = refused_before_work(["run", "--grid", grid], capsys, tmp_path / "out")
    assert "its fc_100000_100000 network has 10,007,600,010 parameters, at least 160.1 GB to train (4 float32" in err
    assert "more than the 64.0 GB of memory on this machine; choose a smaller backbone" in err


def test_a_cache_folder_that_is_a_file_is_refused(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    err = refused_before_work(
        ["run", "--grid", grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT)], capsys, tmp_path / "out"
    )
    assert (
        f"the cache folder {tmp_path / 'cache'} ($HARNESS_CACHE_DIR, default ~/.cache/continual-harness) is a file"
        in err
    )


def test_a_lock_that_is_a_folder_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "out" / ".lock").mkdir(parents=True)
    err = error_of(["run", "--grid", grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT)], capsys, tmp_path / "out")
    assert f"cannot lock the output folder: {tmp_path / 'out' / '.lock'} is a folder" in err


def test_a_reader_that_stops_reading_ends_the_listing_quietly(capsys: pytest.CaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    import sys

    read, write = os.pipe()
    os.close(read)  # `harness list grids | head -1`: the reader is gone before the listing is written
    with open(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["list", "grids"]) == EXIT_OK
        monkeypatch.undo()
    assert capsys.readouterr().err == ""


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


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.42, "0.4 s"), (42, "42 s"), (720, "12 min"), (13680, "3.8 h"), (147600, "41 h")]
)
def test_durations_read_as_a_person_would_write_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_counts_are_plural_except_one() -> None:
    assert (plural(1, "cell"), plural(2, "cell"), plural(1200, "cell")) == ("1 cell", "2 cells", "1,200 cells")


def test_version_is_printed(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"harness {__version__}"


def test_dry_run_lists_cells_data_and_estimates_and_trains_nothing(
    capsys: pytest.CaptureFixture, tmp_path: Path, real_data_dir: Path
) -> None:
    out_dir = tmp_path / "out"
    assert main(["run", "--grid", "smoke", "--dry-run", "--out", str(out_dir), "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if "tags=smoke" in line]
    assert f"\n{len(listed)} cells; about " in out and " of device time on " in out
    assert "multihead/split_mnist/GG/seed1" in out
    assert len(listed) == len({line.split()[0] for line in listed}) > 50  # one line per distinct cell
    assert all("data=MNIST(present)" in line or "data=FashionMNIST(present)" in line for line in listed)
    assert all("  protocol=harness  " in line for line in listed)  # the smoke grid keeps every default
    assert f"MNIST: present in {real_data_dir / 'MNIST' / 'raw'}" in out
    seconds_per = {"s": 1, "min": 60, "h": 3600}
    estimates = [line.rsplit("est=", 1)[1].split()[:2] for line in listed]
    assert all(float(value.replace(",", "")) * seconds_per[unit] > 0 for value, unit in estimates)
    assert "smoke-gg: " in out
    assert "fusion (--fuse auto" in out
    assert not out_dir.exists()


def test_the_dry_run_shows_the_fused_groups_and_why_the_other_cells_run_alone(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["run", "--grid", "smoke", "--dry-run", "--fuse", "on"]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if "tags=smoke" in line]
    # the smoke grid runs two seeds of every setting: fusable ones in pairs, the rest alone with the reason
    assert any("standard/permuted_mnist/GG/seed0" in line and "fused=group" in line for line in listed)
    assert not any("supsup/" in line and "fused=" in line for line in listed)
    assert "fused groups of " in out and "alone: 8 cells: supsup: " in out
    assert main(["run", "--grid", "smoke", "--dry-run"]) == 0  # auto: where fusing was measured to pay
    auto = capsys.readouterr().out
    fused = any("fused=group" in line for line in auto.splitlines())
    assert fused == fusion_pays("cpu", "fc")
    assert ("--fuse on fuses" in auto) == (not fusion_pays("cpu", "fc"))


def test_fusion_can_be_turned_off_and_its_size_must_be_positive(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["run", "--grid", "smoke", "--dry-run", "--fuse", "off"]) == 0
    out = capsys.readouterr().out
    assert "fusion: off" in out and "fused=" not in out
    assert main(["run", "--grid", "smoke", "--dry-run", "--fuse-max", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--fuse-max must be >= 1" in capsys.readouterr().err


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


def test_a_repeated_list_flag_extends_the_list_rather_than_replacing_it(capsys: pytest.CaptureFixture) -> None:
    flags = ["--only", "supsup-hopfield", "--only", "supsup-fig5-left,psp-fig3", "--methods", "hopsupsup"]
    assert main(["run", "--grid", "paper", "--dry-run", *flags, "--methods", "supsup,psp_binary"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "tags=" in line]
    tags = [line.split("tags=")[1].split()[0].split(",") for line in listed]
    methods = {line.split()[1].split("/")[0] for line in listed}
    prefixes = ("supsup-hopfield", "supsup-fig5-left", "psp-fig3")
    assert all(any(t.startswith(prefixes) for t in cell_tags) for cell_tags in tags)
    assert all(any(t.startswith(p) for cell_tags in tags for t in cell_tags) for p in prefixes)
    assert methods == {"hopsupsup", "supsup", "psp_binary"}


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
    assert " of device time on " in capsys.readouterr().out


def test_a_grid_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.grid as grid
    import harness.grid_files as grid_files

    parsed: list[Path] = []
    real = grid_files._parse_yaml
    monkeypatch.setattr(grid_files, "_parse_yaml", lambda text, path: parsed.append(path) or real(text, path))
    grid.expand_grid(grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT))
    assert parsed == [tmp_path / "grid.yaml"]
    parsed.clear()
    grid.expand_grid("paper")  # and each grid it includes once
    assert len(parsed) == len(set(parsed)) == 1 + len(grid.load_grid_file(grid.locate_grid("paper"))["include"])


def test_listing_grids_imports_no_torch() -> None:
    """`harness list grids` answers in a fraction of a second: neither torch nor the methods are imported."""
    code = (
        "import sys, contextlib, io\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['list', 'grids']) == 0\n"
        "assert 'paper: ' in out.getvalue()\n"
        "assert 'torch' not in sys.modules and 'methods' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent, timeout=60)


def test_a_grid_naming_no_backbone_gets_the_stated_default(tmp_path: Path) -> None:
    from harness.grid import DEFAULT_BACKBONE, expand_grid

    unnamed = expand_grid(
        grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT.replace("    backbone: {name: fc, hidden: [8]}\n", ""))
    )
    named = expand_grid(
        grid_file(tmp_path, "experiments:" + GOOD_EXPERIMENT.replace("{name: fc, hidden: [8]}", DEFAULT_BACKBONE))
    )
    assert [cell.backbone for cell in unnamed] == [cell.backbone for cell in named]
    assert unnamed[0].backbone["name"] == "fc" and unnamed[0].backbone["hidden"] == [300, 100]


def test_the_readmes_python_api_example_runs_as_written(tmp_path: Path, real_data_dir: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("From a notebook,", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'Path("runs/notebook")' in example and '"DATA"' in example
    out, data = f"Path({str(tmp_path / 'notebook')!r})", repr(str(real_data_dir))
    example = example.replace('Path("runs/notebook")', out).replace('"DATA"', data)
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert (
        lines[0].startswith("3 3 [") and "'accuracy'" in lines[0] and "ewc" in done.stdout and "standard" in done.stdout
    )
