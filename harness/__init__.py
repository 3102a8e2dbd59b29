"""The harness: grids, the scheduler, the one training loop and the command line."""

__version__ = "0.1.0"
