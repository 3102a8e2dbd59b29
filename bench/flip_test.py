"""How many single-bit flips of a finished cell's files pass for a finished cell (issue 14, item 1).

One small cell is run into a fresh folder; then every byte of its files is flipped in turn (one bit of it, the
bit drawn from a seeded generator), the check that decides "finished, skip it" is asked, and the byte restored.
Three ways of writing and checking are compared:

- ``before``: the store before issue 14: files without page checksums; finished when the runs file reads and
  the evals file's footer (metadata) reads;
- ``page checksums``: files with Parquet page checksums, both read back whole with the checksums verified,
  but no checksum of the files' bytes (what the store does for a folder written before the checksum records);
- ``now``: the store now: page checksums, a whole read, and the SHA-256 of every byte of both files in
  ``checksums/<cell>.json`` (whose own bytes are flipped too).

A flip that passes is also classified by what a reader then gets from the files: an error (the data was lost:
the next report lists the cell as unreadable, and ``pd.read_parquet`` raises), different values (silently
wrong) or the same values (a byte readers do not use, such as a statistic or padding).

    python bench/flip_test.py [--steps 5] [--seed 0]

Measured here (issue 14; one bit of every byte, seed 0):

    check            files (bytes)                         flips  passed  passing flips: file/what a reader gets
    before           runs 12535, evals 2959                15494    8731  evals/error 523, evals/other values 288,
                                                                          evals/same values 1120, runs/other values 844,
                                                                          runs/same values 5956
    page checksums   runs 12977, evals 3054                16031    7431  evals/other values 42, evals/same values 1133,
                                                                          runs/other values 317, runs/same values 5939
    now              runs 12977, evals 3054, checksums 155 16186       0  none

Page checksums cover the data pages only: the footer (schema, statistics, the Arrow schema) is most of a small
file, and some of its flips change what is read; hence the SHA-256 of every byte.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from harness.grid import make_cell
from harness.scheduler import RunOptions, run_grid
from results.store import CHECKSUMS, ResultStore


def before_finished(root: Path, cell_id: str) -> bool:
    """The store's check before issue 14."""
    try:
        rows = pq.read_table(root / "runs" / f"{cell_id}.parquet").to_pylist()
        pq.read_metadata(root / "evals" / f"{cell_id}.parquet")
    except Exception:
        return False
    return len(rows) == 1 and rows[0].get("status") == "ok"


def now_finished(root: Path, cell_id: str) -> bool:
    run = ResultStore(root).read_run(cell_id)
    return run is not None and run.get("status") == "ok"


def content(root: Path, cell_id: str) -> object:
    """What a reader gets: both tables whole, or the error."""
    try:
        return [pq.read_table(root / folder / f"{cell_id}.parquet").to_pylist() for folder in ("runs", "evals")]
    except Exception as error:
        return type(error)


def flips(
    root: Path, cell_id: str, files: list[Path], finished: Callable[[Path, str], bool], rng: random.Random
) -> tuple[int, Counter]:
    """(flips tried, Counter of the passing ones by what a reader then gets)."""
    original = content(root, cell_id)
    tried, passed = 0, Counter()
    for path in files:
        data = path.read_bytes()
        for position in range(len(data)):
            damaged = bytearray(data)
            damaged[position] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(damaged))
            tried += 1
            if finished(root, cell_id):
                now = content(root, cell_id)
                kind = "error" if isinstance(now, type) else ("same values" if now == original else "other values")
                passed[f"{path.parent.name}/{kind}"] += 1
        path.write_bytes(data)
    assert finished(root, cell_id), "a restored file must read as finished"
    return tried, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cell = make_cell(
        "standard",
        "synthetic",
        "GG",
        stream_settings={"num_tasks": 3, "steps_per_task": args.steps},
        backbone={"name": "fc", "hidden": [16]},
        training={"probe_every": 2, "probe_samples": 64},
    )
    with tempfile.TemporaryDirectory() as tmp:
        now = Path(tmp) / "now"
        run_grid([cell], RunOptions(out=now, executor="inline", progress=lambda line: None))
        before = Path(tmp) / "before"
        pages = Path(tmp) / "pages"
        for root in (before, pages):
            shutil.copytree(now, root)
            shutil.rmtree(root / CHECKSUMS)
        for folder in ("runs", "evals"):  # rewritten as the store wrote them before: no page checksums
            path = before / folder / f"{cell.cell_id}.parquet"
            pq.write_table(pq.read_table(path), path)
        parquet = [f"{folder}/{cell.cell_id}.parquet" for folder in ("runs", "evals")]
        setups = [
            ("before", before, parquet, before_finished),
            ("page checksums", pages, parquet, now_finished),
            ("now", now, [*parquet, f"{CHECKSUMS}/{cell.cell_id}.json"], now_finished),
        ]
        print(f"{'check':<16} {'files (bytes)':<44} {'flips':>6} {'passed':>7}  passing flips: file/what a reader gets")
        for name, root, files, finished in setups:
            paths = [root / f for f in files]
            sizes = ", ".join(f"{p.parent.name} {p.stat().st_size}" for p in paths)
            tried, passed = flips(root, cell.cell_id, paths, finished, random.Random(args.seed))
            detail = ", ".join(f"{k} {v}" for k, v in sorted(passed.items())) or "none"
            print(f"{name:<16} {sizes:<44} {tried:>6} {sum(passed.values()):>7}  {detail}")


if __name__ == "__main__":
    main()
