"""Every method with conv layers x every image stream (fake CIFAR pickles, a tiny ImageNet folder of JPEGs)
x every scenario it supports: a few steps of a whole cell, on CPU.

Parametrised over the registries (an image stream is one whose plan has three input channels), so a new method
or image stream is covered with no new test code. Learning is checked elsewhere (tests/test_methods.py); here
the cell must run end to end on each stream's real loading path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import run_ok

from harness.grid import make_cell
from methods import METHODS
from results.metrics import accuracy_matrix
from scenarios import STREAMS

SMALL = {"num_tasks": 2, "steps_per_task": 3}  # a two-task cell, for the streams whose config has these
SMALL_BACKBONE = {"name": "resnet18", "width": 4}  # a tiny backbone of the kind the papers use on small images
OVERRIDES = {  # stream -> (settings beyond SMALL, backbone) where the defaults do not suit it
    "split_imagenet": ({"image_size": 32, "workers": 1}, {"name": "resnet50", "width": 2}),
}


def is_colour(stream: str) -> bool:
    cls = STREAMS.get(stream)
    return cls.plan(cls.Config()).input_shape[0] == 3


def case(stream: str) -> tuple[dict, dict]:
    """A stream's settings for a two-task cell and its backbone."""
    settings, backbone = OVERRIDES.get(stream, ({}, SMALL_BACKBONE))
    fields = STREAMS.get(stream).Config.__dataclass_fields__
    return {**{k: v for k, v in SMALL.items() if k in fields}, **settings}, backbone


IMAGE_STREAMS = {stream: case(stream) for stream in STREAMS.names() if is_colour(stream)}
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
