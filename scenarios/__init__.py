"""Streams (what data arrives, in which order), the datasets they read, and the scenario taxonomy (what task
information is given)."""

from scenarios import cifar, imagenet, permuted, rotated, rotating, split, svhn, synthetic  # noqa: F401  (registration side effect)
from scenarios.datasets import DATASETS, register_dataset
from scenarios.streams import STREAMS, Segment, Stream, register_stream
from scenarios.taxonomy import RULES, Scenario, parse_scenario

__all__ = [
    "DATASETS",
    "RULES",
    "STREAMS",
    "Scenario",
    "Segment",
    "Stream",
    "parse_scenario",
    "register_dataset",
    "register_stream",
]
