"""The tables' rows are typed once (results.rows): the schemas come from them, the runner builds them, the store
refuses anything else, and a change of columns cannot land without a new SCHEMA_VERSION."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from harness.grid import expand_grid, make_cell
from harness.runner import WorkerSettings, failed_result, run_cell
from results.rows import EvalRow, RunRow, columns
from results.schema import EVALS, PYARROW_TYPES, RUNS, SCHEMA_VERSION
from results.store import ResultStore


# Change a column and this fails: bump SCHEMA_VERSION (readers refuse other versions) and update the fingerprint.
def fingerprint() -> str:
    text = RUNS.to_string(show_schema_metadata=False) + EVALS.to_string(show_schema_metadata=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_change_of_columns_needs_a_new_schema_version() -> None:
    assert (SCHEMA_VERSION, fingerprint()) == (3, "f69cb2f68cad209b")


@pytest.mark.parametrize(("row_type", "schema"), [(RunRow, RUNS), (EvalRow, EVALS)])
def test_the_schemas_are_the_row_types(row_type: type, schema: pa.Schema) -> None:
    typed = [(name, PYARROW_TYPES[kind]) for name, kind in columns(row_type)]
    assert [(f.name, f.type) for f in schema][: len(typed)] == typed
    assert schema.names[len(typed) :] == (["schema_version"] if schema is RUNS else [])


def tiny_cell():  # noqa: ANN201
    return make_cell(
        "standard",
        "synthetic",
        "GNu",
        stream_settings={"num_tasks": 2, "steps_per_task": 2, "classes_per_task": 2},
        backbone={"name": "fc", "hidden": [8]},
        training={"batch_size": 8, "probe_every": 1},
    )


def assert_typed(record: dict[str, object], row_type: type) -> None:
    assert list(record) == [name for name, _ in columns(row_type)]
    for name, kind in columns(row_type):
        assert type(record[name]) is kind, (name, type(record[name]), kind)


def test_the_runners_rows_are_the_typed_rows() -> None:
    settings = WorkerSettings(data_dir=None, device="cpu", threads=1)
    result = run_cell(tiny_cell(), settings)
    assert result.run["status"] == "ok", result.run["traceback"]
    assert_typed(result.run, RunRow)
    assert {row["metric"] for row in result.evals} >= {"accuracy", "probe_accuracy", "train_loss", "storage_bytes"}
    for row in result.evals:
        assert_typed(row, EvalRow)
    assert_typed(failed_result(tiny_cell(), settings, RuntimeError("worker died")).run, RunRow)


@pytest.mark.parametrize("change", ["unknown", "missing"])
def test_the_store_refuses_a_row_that_is_not_the_schemas(change: str, tmp_path: Path) -> None:
    result = run_cell(tiny_cell(), WorkerSettings(data_dir=None, device="cpu", threads=1))
    evals = [dict(row) for row in result.evals]
    if change == "unknown":
        evals[0]["accuracy_percent"] = 1.0
    else:
        del evals[0]["n"]
    store = ResultStore(tmp_path)
    store.ensure_writable()
    expected = "missing \\[\\], unknown \\['accuracy_percent'\\]" if change == "unknown" else "missing \\['n'\\]"
    with pytest.raises(ValueError, match=f"a row of the evals table does not match its schema: {expected}"):
        store.write_cell(result.run, evals)
    assert not list(tmp_path.rglob("*.parquet"))  # nothing half-written


def test_cell_ids_stay_the_same_for_the_same_configs() -> None:
    """Results already on disk are found again only while a config hashes as before."""
    cells = {c.label(): c.cell_id for c in expand_grid("smoke")}
    assert {label: cells[label] for label in PINNED_CELL_IDS} == PINNED_CELL_IDS


PINNED_CELL_IDS = {
    "standard/permuted_mnist/GG/seed0": "91c59696c7564abb6e48",
    "ewc/permuted_mnist/GG/seed0": "c80f6b66bd854ef306ac",
    "psp_fast/rotating_fashion_mnist/GG/seed0": "f4dd5b950b2337fd0e26",
    "supsup/permuted_mnist/GG/seed0": "30088b87c321d0c98bed",
    "hopsupsup/split_mnist/GNu/seed0": "8b0767e07d2bad79386a",
}
