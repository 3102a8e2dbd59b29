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
    text = "".join(t.to_string(show_schema_metadata=False, show_field_metadata=False) for t in (RUNS, EVALS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_change_of_columns_needs_a_new_schema_version() -> None:
    assert (SCHEMA_VERSION, fingerprint()) == (5, "b5b7c4c9870f2246")


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
    """Results already on disk are found again only while a config hashes as before. (Settings the harness gains
    later are left out of the hash at their default, ``harness.config.added_setting``: these are the ids cells had
    before ``weight_decay`` and BatchE's authors' options existed.)"""
    cells = {c.label(): c.cell_id for c in expand_grid("smoke")}
    assert {label: cells[label] for label in PINNED_CELL_IDS} == PINNED_CELL_IDS


PINNED_CELL_IDS = {
    "standard/permuted_mnist/GG/seed0": "98a90a391ba49896f58f",
    "ewc/permuted_mnist/GG/seed0": "136387682fa42717a107",
    "psp_fast/rotating_fashion_mnist/GG/seed0": "6ed209d0adc28aa4384c",
    "supsup/permuted_mnist/GG/seed0": "d638aa9abf52246a152e",
    "hopsupsup/split_mnist/GNu/seed0": "0f787a4e570dce06a4fa",
}


def test_a_setting_added_later_leaves_earlier_cell_ids_alone() -> None:
    """A cell config hashes as before when the harness gains a setting whose default is the old behaviour; the
    setting counts once it is given another value."""
    from dataclasses import dataclass

    from harness.config import added_setting, config_to_dict

    @dataclass(frozen=True)
    class Before:
        lr: float = 0.1

    @dataclass(frozen=True)
    class After:
        lr: float = 0.1
        decay: float = added_setting(0.0, min=0.0)

    assert config_to_dict(After()) == config_to_dict(Before()) == {"lr": 0.1}
    assert config_to_dict(After(decay=0.5)) == {"lr": 0.1, "decay": 0.5}
