"""Every method with conv layers x every image stream (fake CIFAR pickles, a tiny ImageNet folder of JPEGs)
x every scenario it supports: a few steps of a whole cell, on CPU.

Parametrised over the registries, so a new method or image stream is covered
with no new test code. Learning is checked elsewhere (tests/test_methods.py);
here the cell must run end to end on each stream's real loading path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import run_ok

from harness.grid import make_cell
from methods import METHODS
from results.metrics import accuracy_matrix

IMAGE_STREAMS = {  # stream -> (its settings for a two-task cell, a tiny backbone of the kind its papers use)
    "split_cifar100": ({"num_tasks": 2, "steps_per_task": 3}, {"name": "resnet18", "width": 4}),
    "icifar": ({"num_tasks": 2, "steps_per_task": 3}, {"name": "resnet18", "width": 4}),
    "split_imagenet": (
        {"num_tasks": 2, "steps_per_task": 3, "image_size": 32, "workers": 1},
        {"name": "resnet50", "width": 2},
    ),
}
CASES = [
    (method, stream, scenario)
    for method in METHODS.names()
    if "conv" in METHODS.get(method).backbones
    for stream in IMAGE_STREAMS
    for scenario in sorted(METHODS.get(method).scenarios)
]


@pytest.mark.parametrize(("method", "stream", "scenario"), CASES, ids=["-".join(c) for c in CASES])
def test_method_runs_a_cell_on_each_image_stream(method: str, stream: str, scenario: str, data_dir: Path) -> None:
    settings, backbone = IMAGE_STREAMS[stream]
    cell = make_cell(
        method,
        stream,
        scenario,
        stream_settings=settings,
        backbone=backbone,
        training={"lr": 1e-3, "batch_size": 8, "probe_every": 0, "eval_samples": 16, "eval_batch_size": 16},
    )
    run, evals = run_ok(cell, data_dir)
    matrix = accuracy_matrix(evals)
    assert matrix.shape == (2, 2) and np.isfinite(matrix[np.tril_indices(2)]).all()
    assert run["samples"] == 2 * 3 * 8 and run["storage_bytes"] > 0
