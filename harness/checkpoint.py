"""Mid-cell checkpoints and partial results: a long cell that is killed resumes where it was, bit for bit.

A checkpoint is the whole state of a cell's training pickled as one object
graph (``torch.save``): the method with its module, the optimiser (whose
parameter references stay those of the module), the stream's sampling state
(``Stream.sampling_state``), the random states of torch, NumPy and Python,
the loop's counters and the rows recorded so far, and where in the stream the
cell stands (a segment not yet begun, or a number of steps into one). Pickling
the method whole means a new method needs no checkpoint code: whatever it keeps
(Fisher matrices, masks, Avalanche's plugins) is saved, and a test resumes every
registered method and checks its rows against an uninterrupted run.

Files: ``OUT/checkpoints/<cell_id>.pt``, written atomically (temporary name,
fsync, rename), led by the SHA-256 of what follows: a damaged or foreign
checkpoint is never loaded, the cell starts over and says so. Partial results
(the rows so far, in the evals schema) go to ``OUT/partial/<cell_id>.parquet``
at every checkpoint, for the progress display and the report; they are never
read as a finished cell's files, which live in ``evals/`` and ``runs/``. The
driver deletes both when the cell's results are written. A checkpoint is
pickled code state, so it is loaded only from the output folder the run
itself writes; it is tied to the cell id, which covers the method's version.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from results.store import write_bytes_atomic

CHECKPOINTS = "checkpoints"
PARTIAL = "partial"
FORMAT = 1
DIGEST_BYTES = 64  # the hex SHA-256 that leads every checkpoint file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """Where a cell stands: ``steps_done`` of segment ``segment`` (None: the segment has not begun)."""

    segment: int
    steps_done: int | None


def checkpoint_path(out: Path, cell_id: str) -> Path:
    return Path(out) / CHECKPOINTS / f"{cell_id}.pt"


def partial_path(out: Path, cell_id: str) -> Path:
    return Path(out) / PARTIAL / f"{cell_id}.parquet"


def random_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    states["python"] = random.getstate()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class Checkpoints:
    """When and where one cell saves its state; ``every_seconds`` 0 saves at every chance (tests)."""

    def __init__(self, out: Path, cell_id: str, every_seconds: float) -> None:
        self.out = Path(out)
        self.cell_id = cell_id
        self.every_seconds = every_seconds
        self.path = checkpoint_path(out, cell_id)
        self.last = time.monotonic()
        self.saved = 0

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "cell_id": self.cell_id, **state}, buffer)
        body = buffer.getvalue()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, hashlib.sha256(body).hexdigest().encode() + body)
        self.last = time.monotonic()
        self.saved += 1

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be trusted (then it is removed)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        digest, body = data[:DIGEST_BYTES], data[DIGEST_BYTES:]
        problem = ""
        if hashlib.sha256(body).hexdigest().encode() != digest:
            problem = "its bytes do not match its checksum"
        else:
            try:
                state = torch.load(io.BytesIO(body), map_location=None, weights_only=False)
            except Exception as error:  # written by other code: a class renamed or removed
                problem = f"it does not load ({type(error).__name__}: {str(error)[:200]})"
            else:
                if state.get("format") == FORMAT and state.get("cell_id") == self.cell_id:
                    return state
                problem = "it is not this cell's checkpoint, or of another format"
        log.warning("checkpoint %s ignored, the cell starts over: %s", self.path, problem)
        self.discard()
        return None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def discard_cell_state(out: Path, cell_id: str) -> None:
    """Remove a finished cell's checkpoint and partial results (the driver, after writing its results)."""
    checkpoint_path(out, cell_id).unlink(missing_ok=True)
    partial_path(out, cell_id).unlink(missing_ok=True)
