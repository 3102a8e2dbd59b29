"""What a cell costs: wall time split into setup, training and evaluation, and peak memory."""

from __future__ import annotations

import time
from pathlib import Path

import torch


class PeakMemory:
    """Peak memory of this cell: CUDA allocations on a GPU, else the process's resident set (VmHWM)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:  # "5" resets the resident-set high-water mark (Linux >= 4.0), so reused workers measure per cell
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    @property
    def kind(self) -> str:
        return "cuda_allocated" if self.device.type == "cuda" else "process_rss"

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Clock:
    """Splits wall time into training and evaluation; syncs the device only when reading it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = time.perf_counter()
        self.setup_seconds = 0.0  # building the stream and the model, before the first step
        self.eval_seconds = 0.0
        self._eval_started = 0.0
        self.settled: float | None = None  # a fused cell's wall time: its setup, evaluations and share of the steps

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def begin_eval(self) -> None:
        self.sync()
        self._eval_started = time.perf_counter()

    def end_eval(self) -> None:
        self.sync()
        self.eval_seconds += time.perf_counter() - self._eval_started

    def end_setup(self) -> None:
        self.sync()
        self.setup_seconds = time.perf_counter() - self.start

    def carry(self, wall: float, setup: float, evaluation: float) -> None:
        """Count the time a resumed cell spent before its checkpoint (after ``end_setup``)."""
        self.start -= wall
        self.setup_seconds += setup
        self.eval_seconds += evaluation

    def settle(self, wall: float) -> None:
        """From now on the wall time is ``wall`` (a fused cell's: harness/fusion.py)."""
        self.settled = wall

    def wall(self) -> float:
        return self.settled if self.settled is not None else time.perf_counter() - self.start
