"""The leaderboard from an output folder: metrics over seeds, rows never mixing versions or settings, published
numbers beside ours, failed and unfinished cells, clear errors for folders that hold no results, and the HTML
page in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import harness.runner as runner
from harness.cli import main
from harness.grid import make_cell
from harness.presets import PRESETS
from harness.scheduler import RunOptions, run_grid
from results.columns import COLUMNS, CellData, ColumnSpec, byte_size, columns, count, percent, register_column
from results.metrics import accuracy_matrix, final_row
from results.report import (
    ReportError,
    backbone_label,
    bootstrap_interval,
    build_sections,
    cell_metrics,
    load_tables,
    render_markdown,
    write_report,
)
from results.schema import EVALS, RUNS
from results.text import headings, stats_text

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<img src=x onerror="alert(1)">&$(rm -rf ~)`'


def cells(method: str, seeds: int, grid: str, **settings: object) -> list:
    return [
        make_cell(
            method,
            "synthetic",
            "GG",
            method_settings=settings or None,
            stream_settings={"num_tasks": 3, "steps_per_task": 20, "separation": 0.4},
            backbone={"name": "fc", "hidden": [16]},
            training={"lr": 1e-3, "batch_size": 32, "probe_every": 10, "probe_samples": 64},
            seed=seed,
            grid=grid,
        )
        for seed in range(seeds)
    ]


def copy_cell(root: Path, cell_id: str, new_id: str, **changes: object) -> None:
    """A cell's files under another id with some run columns changed (a stand-in for another run)."""
    run = pq.read_table(root / "runs" / f"{cell_id}.parquet").to_pylist()[0]
    evals = pq.read_table(root / "evals" / f"{cell_id}.parquet").to_pylist()
    run.update(cell_id=new_id, **changes)
    for row in evals:
        row["cell_id"] = new_id
    pq.write_table(pa.Table.from_pylist(evals, schema=EVALS), root / "evals" / f"{new_id}.parquet")
    pq.write_table(pa.Table.from_pylist([run], schema=RUNS), root / "runs" / f"{new_id}.parquet")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two grids in one folder, a failed cell, a cell never finished, and stand-ins for other versions and
    streams."""
    root = tmp_path_factory.mktemp("runs")
    options = RunOptions(out=root, data_dir=None, executor="inline", progress=lambda _: None)
    run_grid(cells("standard", 2, "first") + cells("si", 2, "first"), options)
    run_grid(cells("ewc", 1, "second"), options)
    failing = cells("multihead", 1, "second")
    original = runner.build_method
    runner.build_method = lambda cell: (_ for _ in ()).throw(RuntimeError("the method could not be built"))
    try:
        run_grid(failing, options)
    finally:
        runner.build_method = original
    standard = cells("standard", 1, "first")[0].cell_id
    copy_cell(root, standard, "v2" + standard[2:], method_version="2")
    si = cells("si", 1, "first")[0].cell_id
    si_run = pq.read_table(root / "runs" / f"{si}.parquet").to_pylist()[0]
    protocol = {"input_scaling": "unit", "pad_to": 32, "first_task_unpermuted": False}
    stand_in = {"stream": "permuted_mnist", "scenario": "GNu", "tags": "supsup-sec4.2-regularisers"}
    copy_cell(
        root,
        si,
        "vdv" + si[3:],
        **stand_in,
        stream_config=json.dumps({**json.loads(si_run["stream_config"]), **protocol}),
        training=json.dumps({**json.loads(si_run["training"]), "loss_outputs": "seen"}),
    )
    copy_cell(root, si, "hrn" + si[3:], **stand_in)  # the same number under the harness's protocol
    config = json.loads(pq.read_table(root / "runs" / f"{standard}.parquet").column("method_config")[0].as_py())
    copy_cell(root, standard, "xss" + standard[3:], method_config=json.dumps({**config, "note": HOSTILE}))
    copy_cell(root, standard, "xsz" + standard[3:], method_config=json.dumps({**config, "note": "plain"}))
    unfinished = [{"cell_id": "never0finished000000", "label": "psp_binary/synthetic/GG/seed0", "grid": "third"}]
    (root / "plans" / "pending.json").write_text(json.dumps(unfinished))
    return root


@pytest.fixture(scope="module")
def report(runs_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    out = tmp_path_factory.mktemp("report")
    return write_report(runs_dir, out)


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| method", "| ---"))
    ]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_rows_aggregate_seeds_with_an_interval_and_match_the_matrices(runs_dir: Path, report) -> None:  # noqa: ANN001
    markdown = report.markdown.read_text()
    rows = {row[0]: row for row in table_rows(markdown, "synthetic · GG")}
    tables = load_tables(runs_dir)
    si_ids = [c.cell_id for c in cells("si", 2, "first")]
    finals = [np.nanmean(accuracy_matrix(tables.evals, cell_id)[-1]) for cell_id in si_ids]
    si = rows["si"]
    assert si[2] == "harness" and si[4] == "2" and si[5].startswith(f"{100 * np.mean(finals):.2f} [")
    low, high = (float(v) for v in si[5].split("[")[1].rstrip("]").split(", "))
    assert low <= 100 * np.mean(finals) <= high
    assert rows["ewc"][4] == "1" and "[" not in rows["ewc"][5]  # one seed: no interval


def test_versions_and_settings_are_separate_rows_never_averaged(report) -> None:  # noqa: ANN001
    labels = [row[0] for row in table_rows(report.markdown.read_text(), "synthetic · GG")]
    standard = [label for label in labels if label.startswith("standard")]
    assert len(standard) == 4  # two versions, and two settings of a stand-in "note"
    assert any(label.endswith("[v2]") for label in standard) and any(label.endswith("[v1]") for label in standard)


def test_published_number_sits_beside_ours_with_the_difference(report) -> None:  # noqa: ANN001
    rows = {row[2]: row for row in table_rows(report.markdown.read_text(), "permuted_mnist · GNu")}
    row = rows["unit inputs, padded to 32, first task permuted, loss over seen outputs"]
    assert row[-2] == "29.31 (SI, after 10 tasks); ours after 3"
    ours = float(row[5])
    assert row[-1].startswith(f"{ours - 29.31:+.2f}") and row[-1].endswith("!")


def test_a_published_number_is_not_compared_with_a_row_of_another_protocol(report) -> None:  # noqa: ANN001
    rows = {row[2]: row for row in table_rows(report.markdown.read_text(), "permuted_mnist · GNu")}
    row = rows["harness"]
    assert "under another protocol" in row[-2] and 'loss_outputs="seen"' in row[-2]
    assert row[-1] == "other protocol"


def test_failed_and_unfinished_cells_are_listed_with_their_errors(report) -> None:  # noqa: ANN001
    markdown = report.markdown.read_text()
    failed = markdown.split("## Failed cells", 1)[1].split("## Cells not finished", 1)[0]
    assert "multihead/synthetic/GG/seed0" in failed and "the method could not be built" in failed
    assert "never0finished000000" in markdown.split("## Cells not finished", 1)[1]
    assert "10 cells finished, 1 failed, 1 not finished" in markdown


def test_strings_from_configs_cannot_inject_markup(report) -> None:  # noqa: ANN001
    page = report.html.read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=\\&quot;alert(1)\\&quot;&gt;&amp;$(rm -rf ~)`" in page
    assert "&lt;img src=x" in report.markdown.read_text() and "<img src=x" not in report.markdown.read_text()


def test_bootstrap_interval_brackets_the_mean_and_needs_two_seeds() -> None:
    low, high = bootstrap_interval([0.80, 0.82, 0.90])
    assert low <= np.mean([0.80, 0.82, 0.90]) <= high and 0.80 <= low and high <= 0.90
    assert all(np.isnan(bootstrap_interval([0.5])))


def test_a_folder_without_results_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ReportError, match="holds no results"):
        load_tables(tmp_path)
    with pytest.raises(ReportError, match="is not a folder"):
        load_tables(tmp_path / "absent")
    (tmp_path / "runs").mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "runs" / "foreign.parquet")
    with pytest.raises(ReportError, match="is not a runs table of the harness"):
        load_tables(tmp_path)
    assert main(["report", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("harness: error:") and "\n" not in error


def test_an_unreadable_result_file_is_reported_not_fatal(runs_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs_dir, copy)
    victim = sorted((copy / "runs").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    paths = write_report(copy)
    assert str(victim) in paths.markdown.read_text()


SORTED_COLUMN = """heading => {
  const table = document.querySelector("section#synthetic-GG table");
  const index = Array.from(table.tHead.rows[0].cells).findIndex(th => th.textContent.startsWith(heading));
  const cells = Array.from(table.tBodies[0].rows).map(row => row.cells[index]);
  return [cells.map(c => c.dataset.v === undefined ? c.textContent : Number(c.dataset.v)), index];
}"""


def test_the_page_renders_in_a_headless_browser_with_every_image_and_no_console_errors(report) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    artifacts = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        messages: list[str] = []
        page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
        page.goto(report.html.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        page.screenshot(path=str(artifacts / "leaderboard.png"), full_page=True)
        orders = {}
        for heading in ("bytes", "bytes", "method"):  # a click sorts by the column; a second, the other way
            page.locator("section#synthetic-GG th", has_text=heading).first.click()
            orders[(heading, len(orders))] = page.evaluate(SORTED_COLUMN, heading)
        browser.close()
    (bytes_down, _), (bytes_up, _), (methods, _) = orders.values()
    assert len(bytes_down) >= 3 and bytes_down == sorted(bytes_down, reverse=True) and bytes_up == bytes_down[::-1]
    assert methods == sorted(methods, reverse=True) and len(set(methods)) > 1
    assert len(images) == len(report.images) > 0 and all(loaded for _, loaded in images), images
    assert not messages, messages
    assert {"synthetic · GG", "permuted_mnist · GNu", "Failed cells", "Cells not finished"} <= set(headings)
    assert (artifacts / "leaderboard.png").stat().st_size > 10_000


def test_names_with_shell_and_html_metacharacters_pass_through_run_and_report_inertly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = "<b>fig</b>&'\"; touch pwned-tag `touch pwned-tick` $(touch pwned-sub)"
    grid = tmp_path / "odd.yaml"
    grid.write_text(
        f"""
name: odd
experiments:
  - tag: {json.dumps(tag)}
    methods: [standard]
    streams: [{{name: synthetic, num_tasks: 2, steps_per_task: 5}}]
    scenarios: [GG]
    backbone: {{name: fc, hidden: [8]}}
"""
    )
    out = tmp_path / "out; touch pwned-out"
    monkeypatch.chdir(tmp_path)
    hostile = grid.read_text().replace("name: odd", 'name: "odd $(touch pwned-name); <script>alert(1)</script>"')
    (tmp_path / "hostile.yaml").write_text(hostile)  # a grid's name is a folder name: plain, or refused
    assert main(["run", "--grid", str(tmp_path / "hostile.yaml"), "--out", str(out), "--executor", "inline"]) == 2
    assert main(["run", "--grid", str(grid), "--out", str(out), "--executor", "inline"]) == 0
    assert main(["report", str(out)]) == 0
    assert not list(tmp_path.glob("pwned*")), "a metacharacter was executed"
    page = (out / "leaderboard.html").read_text()
    assert "<b>fig</b>" not in page and "&lt;b&gt;fig&lt;/b&gt;&amp;" in page
    assert "<b>fig</b>" not in (out / "leaderboard.md").read_text()


# ---- columns: each one registered spec ---------------------------------------------------------------------------


def last_task_accuracy(cell: CellData) -> float:
    final = final_row(cell.matrix)
    return float(final[-1]) if final.size else float("nan")


def test_a_newly_registered_column_appears_in_both_documents_with_no_other_change(
    runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(COLUMNS, "_entries", dict(COLUMNS._entries))  # registered for this test only
    spec = ColumnSpec(
        "last_task", "last task accuracy", last_task_accuracy, percent, True, "the newest task's final accuracy"
    )
    register_column(spec)
    paths = write_report(runs_dir, tmp_path)
    markdown, page = paths.markdown.read_text(), paths.html.read_text()
    header = markdown.split("## synthetic · GG\n\n", 1)[1].splitlines()[0]
    assert header.endswith("| samples/s | last task accuracy | published | ours − paper |")
    assert "(segments are not tasks); last task accuracy: the newest task's final accuracy." in markdown
    ewc = next(c.cell_id for c in cells("ewc", 1, "second"))
    expected = percent(final_row(accuracy_matrix(load_tables(runs_dir).evals, ewc))[-1])
    row = {row[0]: row for row in table_rows(markdown, "synthetic · GG")}["ewc"]
    assert len(row) == len(headings()) and row[headings().index("last task accuracy")] == expected
    assert "<th>samples/s</th><th>last task accuracy</th><th>published</th>" in page
    ewc_html = next(line for line in page.splitlines() if '">ewc</td>' in line)
    assert re.search(f'<td data-v="[^"]+">{re.escape(expected)}</td><td></td><td></td></tr>', ewc_html), ewc_html
    assert "last task accuracy: the newest task&#x27;s final accuracy." in page


def test_an_outside_package_adds_a_column_through_its_entry_point(outside_package: Callable) -> None:
    plugin = "from results.columns import ColumnSpec, count, of_run, register_column\n"
    plugin += "register_column(ColumnSpec('steps', 'steps', of_run('steps'), count, False))\n"
    outside_package(COLUMNS, "harness.columns", "outside_columns", plugin)
    assert columns()[-1].name == "steps" and headings()[-3] == "steps"


def test_a_column_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="leaderboard column 'accuracy' is already registered"):
        register_column(ColumnSpec("accuracy", "again", last_task_accuracy, percent, True))


@pytest.mark.parametrize("column", columns(), ids=lambda column: column.name)
def test_every_registered_column_has_a_heading_and_a_value_in_each_row(column: ColumnSpec, report) -> None:  # noqa: ANN001
    markdown = report.markdown.read_text()
    index = headings().index(column.heading)
    rows = table_rows(markdown, "synthetic · GG")
    assert rows and all(len(row) == len(headings()) and row[index] for row in rows)


def test_values_read_as_percent_bytes_and_counts_with_the_interval_where_it_says_something() -> None:
    assert percent(0.1234) == "12.34" and count(12345.6) == "12,346"
    assert [byte_size(v) for v in (999, 1500, 2.5e6, 1e9)] == ["999 B", "1.50 kB", "2.50 MB", "1.00 GB"]
    accuracy = COLUMNS.get("accuracy")
    assert stats_text((0.5, 0.4, 0.6), accuracy) == "50.00 [40.00, 60.00]"
    assert stats_text((0.5, 0.49999, 0.50001), accuracy) == "50.00"  # an interval that reads as a point is left out
    assert stats_text((float("nan"), float("nan"), float("nan")), accuracy) == "–"


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_backbone_is_named_by_its_preset(name: str) -> None:
    assert backbone_label(json.dumps(asdict(PRESETS[name]))) == name


def test_a_backbone_that_is_no_preset_gets_a_short_description() -> None:
    assert backbone_label('{"name": "fc", "hidden": [16], "width": 64}') == "fc_16"
    assert backbone_label({"name": "resnet18", "hidden": [1024, 1024], "width": 32}) == "resnet18_w32"
    assert backbone_label({"name": "resnet18", "hidden": [7], "width": 20}) == "gem_resnet18"  # hidden: unused


def test_the_report_imports_no_torch() -> None:
    code = "import sys, results.report; assert 'torch' not in sys.modules, 'results imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


# ---- issue 14: one line for what cannot be written, and files that are no cell's listed, not fatal --------------


def report_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("harness: error: "), err
    return err


def test_a_report_out_that_is_a_file_is_one_line(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a-file").write_text("x")
    err = report_error([str(runs_dir), "--out", str(tmp_path / "a-file")], capsys)
    assert f"report folder {tmp_path / 'a-file'} is a file, not a folder" in err


def test_a_read_only_report_folder_is_one_line(
    runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: the file system's answer to anyone else, simulated
        real_mkdir = Path.mkdir

        def refuse(self: Path, *args: object, **kwargs: object) -> None:
            if out in self.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    try:
        err = report_error([str(runs_dir), "--out", str(out)], capsys)
    finally:
        out.chmod(0o755)
    assert f"cannot write the report into {out}: " in err and "Permission denied; give --out a folder you can" in err


def test_files_that_are_no_cells_results_are_listed_and_the_report_goes_on(runs_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs_dir, copy)
    cell_id = cells("ewc", 1, "second")[0].cell_id
    shutil.copy(copy / "runs" / f"{cell_id}.parquet", copy / "runs" / "ewc-copy.parquet")  # copied under a new name
    pd.DataFrame({"x": [1]}).to_parquet(copy / "runs" / "foreign.parquet")  # another schema
    (copy / "plans" / "broken.json").write_text('[{"cell_id": ')  # a plan cut short
    tables = load_tables(copy)
    assert len(tables.runs) == len(load_tables(runs_dir).runs) and tables.runs.cell_id.is_unique  # counted once
    assert any("ewc-copy.parquet holds cell " + cell_id in line for line in tables.ignored), tables.ignored
    assert any("foreign.parquet is not a runs table of the harness" in line for line in tables.ignored)
    assert any("broken.json does not read as a plan" in line for line in tables.ignored)
    markdown = render_markdown(build_sections(cell_metrics(tables)), tables, "images", "copy")
    assert "## Files skipped" in markdown and "ewc-copy.parquet" in markdown
    seeds = {row[0]: row[4] for row in table_rows(markdown, "synthetic · GG")}
    assert seeds["ewc"] == "1"  # not two seeds from one


def test_the_readme_names_every_metric_the_harness_records() -> None:
    from results.schema import DIAGNOSTIC_PREFIX, METRICS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert [m for m in METRICS if f"`{m}`" not in readme] == []
    assert f"`{DIAGNOSTIC_PREFIX}<name>`" in readme
