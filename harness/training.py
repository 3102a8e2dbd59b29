"""How a cell trains and when it is evaluated: the ``training`` block of a grid experiment.

Its own module so that the grid, the estimator and the report's protocol table read it without importing the
training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from harness.config import added_setting


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = field(default=128, metadata={"min": 1})  # both papers: 128
    optimizer: Literal["rmsprop", "adam", "sgd"] = "rmsprop"  # both papers: RMSprop
    lr: float = field(default=1e-4, metadata={"min": 0.0})  # both papers: 1e-4 on the MNIST family
    momentum: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})  # rmsprop and sgd (papers: 0)
    # L2 weight decay on every trained parameter, torch's ``weight_decay`` (SupSup's code: 1e-4 on its SGD scores)
    weight_decay: float = added_setting(0.0, min=0.0)
    # within every segment: constant, or cosine decay to 0 over its steps (SupSup's cosine_lr, per task)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata={"min": 0})  # linear warm-up at the start of every segment
    probe_every: int = field(default=100, metadata={"min": 0})  # steps between probes of probe_task (0: none)
    probe_task: int = field(default=0, metadata={"min": 0})  # PSP Figures 2-5 plot task 0 over time
    probe_samples: int = field(default=2000, metadata={"min": 0})  # test examples per probe (0: all)
    eval_batch_size: int = field(default=128, metadata={"min": 1})  # task inference runs once per test batch
    eval_samples: int = field(default=0, metadata={"min": 0})  # test examples per task in the matrix (0: all)
    eval_every_segments: int = field(default=1, metadata={"min": 1})  # matrix rows every N segments (and the last)
    # GNu's training loss: over every k*l output ("all", the harness default), the classes of the tasks seen so far
    # ("seen": van de Ven & Tolias 2019's active classes), or the current task's ("current"). Methods.base.LOSS_OUTPUTS
    loss_outputs: Literal["all", "seen", "current"] = "all"

    def __post_init__(self) -> None:
        if self.optimizer == "adam" and self.momentum:
            raise ValueError("momentum applies to rmsprop and sgd; adam has its own betas")
