"""Supermasks in Superposition (Wortsman et al. 2020): one binary mask per task over fixed random weights.

Training (sec. 3.2, 4.1, 4.2): only the current mask's scores train; the
weights stay at the signed Kaiming constant (see :mod:`methods.supermask`).
GG masks keep the top ``keep_fraction`` of ``|scores|`` (Edge-Popup), in
every layer or spread over them by the Erdos-Renyi rule (``budget``); GN and
NN masks threshold the scores at 0. Every layer is masked, the output
layer included, and has ``output_size`` (s) outputs: the first l are the
classes, the rest superfluous neurons (sec. 3.6) that the cross-entropy pushes
down.

Inference: GG uses the given task's mask. GNs, GNu and NNs infer it once per
batch with One-Shot or Binary (:mod:`methods.task_inference`) from the first
``inference_images`` images (the paper's default is one image), then classify
the whole batch with that mask. In GNu the l class logits go to the inferred
task's block of the k*l label space, so a wrong task scores 0 for the batch
(sec. 4.2).

NNs (sec. 3.4, 4.3): every ``check_every`` training batches, One-Shot runs on
the current batch over the masks so far; if ``k * max softmax(-grad) < 1 +
epsilon`` a new mask is allocated, otherwise the argmax mask is trained from
then on. As in the authors' code the first mask is allocated at the first
batch without inference, and at least ``min_candidates`` masks are superposed,
the ones not yet allocated at their (seeded) initial scores: with a single
mask the test could never say "known". Once ``mask_budget`` masks exist,
batches that ask for a new one are not trained (the authors skip them too).

Choices where the paper is silent, and why:

- Finished masks are kept as packed bits, not float scores, so that 2,500
  LeNet masks fit in a few hundred MB. When NNs reselects an old mask, or a GG
  or GN task recurs, its scores restart from the stored mask: the signs of the
  mask with the magnitudes of that slot's initial scores (threshold masks), or
  the initial magnitudes lifted by one bound for kept entries (top-fraction
  masks). The authors keep every task's float scores instead.
- ``transfer`` starts a new task's scores from the running mean of the
  previous *masks* (as the paper and the issue state it), centred for
  threshold masks; the authors' GG code averages the raw scores, which would
  need every task's float scores.
- ``storage()`` counts the seed of the weights and the masks in use, packed or
  in the paper's CSC form with 16-bit indices (``storage_format``); both sizes
  are also reported by ``diagnostics()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import SCENARIO_NAMES, BuildContext, Method, Prediction, ReplaySampler, register_method
from methods.norms import batch_statistics, normalise
from methods.supermask import (
    CandidateOutputs,
    MaskBank,
    MixedSuperimpose,
    Superimpose,
    ThresholdMask,
    TopFractionMask,
    csc16_bytes,
    erdos_renyi_densities,
    kaiming_uniform_scores,
    seeded_generator,
    signed_kaiming_constant,
    top_fraction,
)
from methods.task_inference import (
    Objective,
    binary,
    binary_rounds,
    halve,
    is_uncertain,
    objective_per_example,
    objective_value,
    one_shot,
    spread_to_label_space,
)

SEED_BYTES = 8
# Batched inference costs per inference image what the per-batch path costs per batch over a mixed weight, so it
# pays only for few images per batch. `python bench/supsup.py inference` (LeNet 300-100, k = 1000, 2 cores): One-Shot
# 5.3 / 10.3 / 18.9 ms per batch at 1 / 4 / 8 images against 136-168 per batch, 276 against 136 at all 128;
# Binary 82 / 347 / 619 at 1 / 4 / 8 against 614-740.
BATCHED_IMAGES_AT_MOST = {"one_shot": 32, "binary": 4}
INFERENCE_IMAGES_AT_ONCE = 4096  # images per forward-backward pass of batched inference (masks unpacked once per pass)
CANDIDATE_OUTPUT_BYTES = 256 << 20  # Binary: the first layer's outputs under each candidate, kept through the rounds


@dataclass(frozen=True)
class SupSupConfig:
    # outputs of every mask's last layer, s >= l; 0 means l (no superfluous neurons). The paper uses 100
    # (LeNet 300-100, 250 tasks), 500 (FC 1024-1024; LeNet with 2,500 tasks) and 200 (RotatedMNIST)
    output_size: int = field(default=0, metadata={"min": 0})
    mask: Literal["auto", "threshold", "top_fraction"] = "auto"  # auto: top_fraction in GG, threshold elsewhere
    keep_fraction: float = field(default=0.5, metadata={"min": 1e-6, "max": 1.0})  # top_fraction: weights kept
    # top_fraction: keep_fraction in every layer, or spread over the layers by the Erdos-Renyi rule, small layers
    # denser (sec. 4.1's "layer-wise budget"; the authors' er_sparsity)
    budget: Literal["uniform", "erdos_renyi"] = "uniform"
    transfer: bool = False  # a new task's scores start from the running mean of the previous masks (Fig. 2)
    inference: Literal["one_shot", "binary"] = "one_shot"  # sec. 3.3
    objective: Objective = "entropy"  # entropy H, or superfluous (G, sec. 3.6; needs output_size > l)
    inference_images: int = field(default=1, metadata={"min": 0})  # images of a test batch to infer from (0: all)
    check_every: int = field(default=100, metadata={"min": 1})  # NNs: batches between allocation checks
    epsilon: float = field(default=0.125, metadata={"min": 0.0})  # NNs: new mask when k * max(nu) < 1 + epsilon
    min_candidates: int = field(default=5, metadata={"min": 1})  # NNs: masks superposed at least (authors: 5)
    mask_budget: int = field(default=2500, metadata={"min": 1})  # NNs: most masks ever allocated
    storage_format: Literal["packed", "csc16"] = "packed"  # how storage() counts masks

    def __post_init__(self) -> None:
        if self.objective == "superfluous" and self.output_size == 0:
            raise ValueError("objective superfluous needs superfluous neurons: set output_size above the class count")


class MaskState:
    """Which mask every layer of one network applies: the training scores, a stored slot, or a superposition."""

    def __init__(self) -> None:
        self.mode: Literal["train", "slot", "superpose", "mixed"] = "train"
        self.slot = 0
        self.alpha: Tensor | None = None  # superpose: (candidates,); mixed: (groups x candidates)
        self.rows: Tensor | None = None
        self.group: Tensor | None = None  # mixed: each example's row of alpha


class MaskedLayer(nn.Module):
    """A layer computing with ``W * M``: W fixed, M from the scores, a stored slot or a superposition of slots."""

    def __init__(self, weight: Tensor, state: MaskState, top_keep: float | None, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.scores = nn.Parameter(torch.zeros_like(weight))
        self.state = state
        self.top_keep = top_keep  # None: threshold at 0
        self.bank = MaskBank(tuple(weight.shape), device)
        self._cached: tuple[tuple[int, int], Tensor] | None = None
        self.capture: list[tuple[MaskedLayer, Tensor, Tensor]] | None = None  # (layer, input, output) when set
        # mixed mode, first layer only: keep each candidate's outputs on first use and superpose those after
        self.keeps_candidate_outputs = False
        self.candidate_outputs: CandidateOutputs | None = None

    @property
    def fan_in(self) -> int:
        return self.weight[0].numel()

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def current_mask(self) -> Tensor:
        """The boolean mask the scores define now."""
        if self.top_keep is None:
            return self.scores.detach() >= 0
        return top_fraction(self.scores.detach().abs(), self.top_keep)

    def store(self, slot: int) -> None:
        mask = self.current_mask()
        if slot == self.bank.count:
            self.bank.append(mask)
        else:
            self.bank.replace(slot, mask)

    def slot_mask(self, slot: int) -> Tensor:
        key = (slot, self.bank.versions[slot])
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.bank.mask(slot, self.weight.dtype).to(self.weight.device))
        return self._cached[1]

    def forward(self, x: Tensor) -> Tensor:
        state = self.state
        if state.mode == "train":
            if self.top_keep is None:
                mask = ThresholdMask.apply(self.scores)
            else:
                mask = TopFractionMask.apply(self.scores.abs(), self.top_keep)
            weight = self.weight * mask
        elif state.mode == "slot":
            weight = self.weight * self.slot_mask(state.slot)
        elif state.mode == "mixed":  # a superposition per group of examples: linear layers only (_batches_inference)
            if self.keeps_candidate_outputs and self.candidate_outputs is None:
                bank, alpha, inputs = self.bank, state.alpha.detach(), x.detach()
                self.candidate_outputs = bank.candidate_outputs(self.weight, inputs, alpha, state.group, state.rows)
            if self.candidate_outputs is not None:
                return self.candidate_outputs.superposed(state.alpha, state.group)
            return MixedSuperimpose.apply(x, state.alpha, self.weight, self.bank, state.rows, state.group)
        else:
            assert state.alpha is not None
            uniform = state.rows is None and len(state.alpha) == self.bank.count
            weight = Superimpose.apply(state.alpha, self.weight, self.bank, state.rows, uniform)
        out = self.apply_weight(x, weight)
        if self.capture is not None:
            self.capture.append((self, x, out))
        return out


class MaskedLinear(MaskedLayer):
    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)


class MaskedConv2d(MaskedLayer):
    """A masked convolution: the mask covers the kernel, one bit per weight, as for linear layers."""

    def __init__(self, weight: Tensor, state: MaskState, top_keep: float | None, device: torch.device, stride: int,
                 padding: int) -> None:  # fmt: skip
        super().__init__(weight, state, top_keep, device)
        self.stride, self.padding = stride, padding

    def apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class SlotBatchNorm(nn.Module):
    """Non-affine batch norm (nothing to learn) with running statistics for each mask slot.

    Training normalises with the batch and updates the active slot's running
    statistics; predicting with a slot uses that slot's; a superposition of
    slots uses the mean of theirs, so that inferring from one image works.
    """

    def __init__(self, num_features: int, state: MaskState, momentum: float = 0.1) -> None:
        super().__init__()
        self.state, self.momentum = state, momentum
        self.register_buffer("running_mean", torch.zeros(0, num_features))
        self.register_buffer("running_var", torch.ones(0, num_features))

    def _grow(self, slots: int) -> None:
        have, features = self.running_mean.shape
        if slots > have:
            more = slots - have
            device = self.running_mean.device
            self.running_mean = torch.cat([self.running_mean, torch.zeros(more, features, device=device)])
            self.running_var = torch.cat([self.running_var, torch.ones(more, features, device=device)])

    def forward(self, x: Tensor) -> Tensor:
        state = self.state
        self._grow(state.slot + 1)
        if state.mode == "train":
            if self.training:
                mean, var = batch_statistics(
                    x, self.running_mean[state.slot], self.running_var[state.slot], self.momentum
                )
            else:
                mean, var = self.running_mean[state.slot], self.running_var[state.slot]
        elif state.mode == "slot":
            mean, var = self.running_mean[state.slot], self.running_var[state.slot]
        else:
            rows = slice(None) if state.rows is None else state.rows
            mean, var = self.running_mean[rows].mean(0), self.running_var[rows].mean(0)
        return normalise(x, mean, var)

    def nbytes(self, slots: int) -> int:
        return 2 * slots * self.running_mean.shape[1] * self.running_mean.element_size()


class ShapeKit:
    """Records the weight shape of every layer a backbone asks for and builds nothing that computes: the
    first pass of a layer-wise budget, which must see all layers before it can size any."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        self.shapes.append((out_features, in_features))
        return nn.Identity()

    def activation(self, num_features: int) -> nn.Module:
        return nn.Identity()

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
        self.shapes.append((out_channels, in_channels, kernel_size, kernel_size))
        return nn.Identity()

    def norm(self, num_features: int) -> nn.Module:
        return nn.Identity()


class SupermaskKit:
    """Layers of a supermask network: each linear layer gets seeded signed-constant weights and a mask bank.

    ``top_keep`` is None (threshold masks) or the fraction kept by each layer, in the order they are built."""

    def __init__(self, seed: int, state: MaskState, top_keep: Sequence[float] | None, device: torch.device) -> None:
        self.seed, self.state, self.top_keep, self.device = seed, state, top_keep, device
        self.layers: list[MaskedLayer] = []
        self.norms: list[SlotBatchNorm] = []

    def _keep(self) -> float | None:
        return None if self.top_keep is None else self.top_keep[len(self.layers)]

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        generator = seeded_generator(self.seed, "supsup-weights", len(self.layers))
        weight = signed_kaiming_constant((out_features, in_features), generator)
        layer = MaskedLinear(weight, self.state, self._keep(), self.device)
        self.layers.append(layer)
        return layer

    def activation(self, num_features: int) -> nn.Module:
        return nn.ReLU()

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
        generator = seeded_generator(self.seed, "supsup-weights", len(self.layers))
        weight = signed_kaiming_constant((out_channels, in_channels, kernel_size, kernel_size), generator)
        layer = MaskedConv2d(weight, self.state, self._keep(), self.device, stride, padding)
        self.layers.append(layer)
        return layer

    def norm(self, num_features: int) -> nn.Module:
        layer = SlotBatchNorm(num_features, self.state)
        self.norms.append(layer)
        return layer


MASK_SECONDS_PER_FLOP = 0.134 / 1000 / 5.32e5  # bench/supsup.py inference, LeNet 300-100 (5.32e5 FLOPs)
# Per test batch, relative to One-Shot batch by batch (the same benchmark, one run, 1,000 masks): Binary batch by
# batch 557 against 134 ms; across 334 test batches One-Shot 4.9 ms and Binary 69.1 ms, classification included.
# Binary across batches since its later rounds reuse the first layer's outputs (CandidateOutputs): 250 -> 122 ms
# beside One-Shot's 14 ms in one run on one loaded thread, so about half its earlier factor.
INFERENCE_FACTORS = {
    ("one_shot", False): 1.0,
    ("binary", False): 4.1,
    ("one_shot", True): 0.037,
    ("binary", True): 0.25,
}


@register_method("supsup")
class SupSup(Method):
    takes_weight_decay = True
    relative_speed = {"fc": 0.76, "conv": 0.71}
    # NNs allocates masks by each cell's own losses (data-dependent control flow); Binary inference and the
    # per-task mask edits were not brought under vmap
    fusion_unavailable = "mask allocation (NNs) and task inference follow each cell's own data; not fused yet"

    @classmethod
    def inference_seconds(
        cls,
        config: Any,
        scenario: str,
        tasks_seen: Sequence[int],
        batches_per_task: int,
        flops: float,
        kind: str = "fc",
    ) -> float:
        """Task inference superposes every stored mask for each test batch: per batch and mask, in proportion to
        the net's FLOPs, 0.134 s per batch for 1,000 LeNet 300-100 masks with One-Shot (bench/supsup.py
        inference), times ``INFERENCE_FACTORS`` for Binary and for inference batched across test batches
        (networks of linear layers inferring from few images, ``BATCHED_IMAGES_AT_MOST``)."""
        if scenario == "GG":
            return 0.0
        images = config.inference_images or 128  # 0: the whole test batch
        batched = kind == "fc" and images <= BATCHED_IMAGES_AT_MOST[config.inference]
        factor = INFERENCE_FACTORS[(config.inference, batched)]
        return sum(k * batches_per_task * k for k in tasks_seen) * MASK_SECONDS_PER_FLOP * flops * factor

    version = "1"
    Config = SupSupConfig
    scenarios = frozenset(SCENARIO_NAMES)
    config: SupSupConfig

    # ---- building ------------------------------------------------------------------------------------------------

    def _layer_keep(self, context: BuildContext) -> list[float]:
        """The fraction of weights each layer's top-k masks keep, output layer last."""
        shapes = ShapeKit()
        feature_dim = context.make_backbone(shapes).feature_dim
        shapes.linear(feature_dim, self.outputs)
        if self.config.budget == "erdos_renyi":
            return erdos_renyi_densities(shapes.shapes, self.config.keep_fraction)
        return [self.config.keep_fraction] * len(shapes.shapes)

    def build(self, context: BuildContext) -> nn.Module:
        config = self.config
        self.scenario = context.scenario
        self.labels = context.label_space
        self.classes = context.label_space.classes_per_task
        self.outputs = config.output_size or self.classes
        if self.outputs < self.classes:
            raise ValueError(f"supsup output_size {self.outputs} is below the {self.classes} classes of a task")
        if config.objective == "superfluous" and self.outputs == self.classes:
            raise ValueError(f"objective superfluous needs output_size above the {self.classes} classes")
        use_top = config.mask == "top_fraction" or (config.mask == "auto" and context.scenario == "GG")
        self.seed = context.seed
        self.device = context.device
        self.state = MaskState()
        kit = SupermaskKit(context.seed, self.state, self._layer_keep(context) if use_top else None, context.device)
        backbone = context.make_backbone(kit)
        self.net = backbone.with_head(kit, self.outputs)
        self.layers = kit.layers
        self.norms = kit.norms
        self.slot_task: list[int] = []  # GG and GN: the task of every slot
        self.task_slot: dict[int, int] = {}
        self.active: int | None = None
        self.allocated = 0  # slots in use (NNs reserves min_candidates slots at their initial scores)
        self.dirty = False
        self.batches = 0
        self.skipping = False
        self.restart: list[nn.Parameter] | None = None
        self._csc_cache: dict[tuple[int, int, int], int] = {}
        if context.scenario == "NNs":
            for slot in range(config.min_candidates):
                self._load_initial(slot)
                self._store(slot)
        return self.net

    def scores(self) -> list[nn.Parameter]:
        return [layer.scores for layer in self.layers]

    # ---- scores of a slot ----------------------------------------------------------------------------------------

    def _initial_scores(self, layer: int, slot: int) -> Tensor:
        module = self.layers[layer]
        generator = seeded_generator(self.seed, "supsup-scores", layer, slot)
        return kaiming_uniform_scores(tuple(module.weight.shape), module.fan_in, generator).to(self.device)

    @torch.no_grad()
    def _load_initial(self, slot: int) -> None:
        for index, layer in enumerate(self.layers):
            scores = self._initial_scores(index, slot)
            if self.config.transfer and layer.bank.count > 0 and self.scenario != "NNs":
                mean = layer.bank.ones.view_as(scores).float() / layer.bank.count
                bound = 1.0 / layer.fan_in**0.5
                centred = mean if layer.top_keep is not None else 2 * mean - 1
                scores = bound * centred + 0.01 * scores  # the initial draw only breaks ties
            layer.scores.copy_(scores)

    @torch.no_grad()
    def _load_stored(self, slot: int) -> None:
        """Scores that reproduce a stored mask exactly, with the slot's initial magnitudes."""
        for index, layer in enumerate(self.layers):
            magnitude = self._initial_scores(index, slot).abs()
            mask = layer.bank.mask(slot).to(self.device)
            if layer.top_keep is None:
                layer.scores.copy_(torch.where(mask, magnitude, -magnitude))
            else:
                bound = 1.0 / layer.fan_in**0.5
                layer.scores.copy_(torch.where(mask, magnitude + bound, magnitude))

    def _store(self, slot: int) -> None:
        for layer in self.layers:
            layer.store(slot)

    def _sync(self) -> None:
        """Write the mask being trained into its slot, so inference and prediction see it."""
        if self.dirty and self.active is not None:
            self._store(self.active)
        self.dirty = False

    def _activate(self, slot: int, fresh: bool) -> None:
        if fresh:
            self._load_initial(slot)
        else:
            self._load_stored(slot)
        if slot == self.layers[0].bank.count:
            self._store(slot)
        self.active = slot
        self.state.slot = slot  # the slot whose normalisation statistics training updates
        self.restart = self.scores()

    # ---- training ------------------------------------------------------------------------------------------------

    def begin_segment(self, task: int | None, step: int) -> list[nn.Parameter] | None:
        if task is None:  # NNs: masks are chosen every check_every batches
            return self.scores()
        self._sync()
        if task in self.task_slot:
            self._activate(self.task_slot[task], fresh=False)
        else:
            slot = len(self.slot_task)
            self.slot_task.append(task)
            self.task_slot[task] = slot
            self._activate(slot, fresh=True)
            self.allocated = len(self.slot_task)
        self.restart = None
        return self.scores()

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        if self.scenario == "NNs" and self.batches % self.config.check_every == 0:
            self._choose_mask(x)
        self.batches += 1
        self.state.mode = "train"
        logits = self.net(x)
        if self.skipping:
            return logits.sum() * 0.0  # over budget: this batch trains nothing
        self.dirty = True
        return F.cross_entropy(logits, y % self.classes)

    def after_step(self, step: int) -> list[nn.Parameter] | None:
        restart, self.restart = self.restart, None
        return restart

    def end_segment(self, task: int | None, replay: ReplaySampler | None) -> None:
        self._sync()

    @torch.no_grad()
    def _choose_mask(self, x: Tensor) -> None:
        """NNs: keep training the mask the batch belongs to, switch to another, or allocate one (sec. 3.4)."""
        self.skipping = False
        if self.allocated == 0:
            self.allocated = 1
            self._activate(0, fresh=True)
            return
        self._sync()
        count = self.layers[0].bank.count
        with torch.enable_grad():
            chosen, score = one_shot(self._superposed(x), count, self._objective, self.device)
        if is_uncertain(score, count, self.config.epsilon) or chosen >= self.allocated:
            if self.allocated >= self.config.mask_budget:
                self.skipping = True
                return
            chosen = self.allocated
            self.allocated += 1
            self._activate(chosen, fresh=True)
        elif chosen != self.active:
            self._activate(chosen, fresh=False)

    # ---- inference -----------------------------------------------------------------------------------------------

    def _objective(self, logits: Tensor) -> Tensor:
        return objective_value(self.config.objective, logits, self.classes)

    def _superposed(self, x: Tensor):  # noqa: ANN202
        def forward(alpha: Tensor, rows: Tensor | None) -> Tensor:
            self.state.mode, self.state.alpha, self.state.rows = "superpose", alpha, rows
            try:
                return self.net(x)
            finally:
                self.state.mode, self.state.alpha, self.state.rows = "train", None, None

        return forward

    def infer_slot(self, x: Tensor) -> int:
        """The slot of the mask the batch most likely belongs to, among the slots in use."""
        count = self.allocated
        if count <= 1:
            return 0
        images = x[: self.config.inference_images] if self.config.inference_images else x
        forward = self._superposed(images)
        if count < self.layers[0].bank.count:  # NNs: leave out the reserved, never-trained slots
            rows = torch.arange(count, device=self.device)
            base = forward

            def forward(alpha: Tensor, subset: Tensor | None) -> Tensor:
                return base(alpha, rows if subset is None else rows[subset])

        with torch.enable_grad():
            if self.config.inference == "binary":
                return binary(forward, count, self._objective, self.device)
            return one_shot(forward, count, self._objective, self.device)[0]

    def _batches_inference(self, batch_size: int) -> bool:
        """Whether task inference runs over several test batches at once: it gives the per-batch result when the
        examples of a batch do not mix (no batch norm) and the per-example weight gradients are outer products
        (linear layers), and it is faster when few images per batch decide (``BATCHED_IMAGES_AT_MOST``)."""
        linear = all(isinstance(layer, MaskedLinear) for layer in self.layers)
        images = min(self.config.inference_images or batch_size, batch_size)
        return not self.norms and linear and images <= BATCHED_IMAGES_AT_MOST[self.config.inference]

    def _alpha_gradients(self, x: Tensor, count: int, rows: Tensor | None) -> Tensor:
        """``d objective_n / d alpha_i`` at alpha = 1/count for every example n, shape (count, N): one backward
        pass to every masked layer's output (delta_n), then, per layer, ``delta_n . ((W * M_i) x_n)``: the
        per-example weight gradient ``delta_n x_n^T * W`` projected on mask i, computed as masked weights times
        inputs so that no per-example weight-sized tensor exists (``MaskBank.bilinear``)."""
        alpha = torch.full((count,), 1.0 / count, device=self.device)
        captured: list[tuple[MaskedLayer, Tensor, Tensor]] = []
        for layer in self.layers:
            layer.capture = captured
        self.state.mode, self.state.alpha, self.state.rows = "superpose", alpha, rows
        try:
            with torch.enable_grad():
                logits = self.net(x.detach().requires_grad_(True))
                total = objective_per_example(self.config.objective, logits, self.classes).sum()
                deltas = torch.autograd.grad(total, [out for _, _, out in captured])
        finally:
            self.state.mode, self.state.alpha, self.state.rows = "train", None, None
            for layer in self.layers:
                layer.capture = None
        gradient = torch.zeros(count, len(x), device=self.device)
        for (layer, inputs, _), delta in zip(captured, deltas, strict=True):
            gradient += layer.bank.bilinear(layer.weight.detach(), inputs.detach(), delta, rows)
        return gradient

    def infer_slots(self, batches: Sequence[Tensor]) -> list[int]:
        """``infer_slot`` of every batch, over all their inference images at once (issue 15). One-Shot: one
        gradient at the uniform superposition. Binary: that gradient halves every batch's candidates in its first
        round; each later round superposes each batch's own survivors (``MixedSuperimpose``)."""
        count = self.allocated
        rows = None if count == self.layers[0].bank.count else torch.arange(count, device=self.device)
        n = self.config.inference_images
        images = torch.cat([x[:n] if n else x for x in batches])
        sizes = [min(n, len(x)) if n else len(x) for x in batches]
        parts = images.split(INFERENCE_IMAGES_AT_ONCE)
        gradient = torch.cat([self._alpha_gradients(part, count, rows) for part in parts], 1)
        scores = [-part.mean(1) for part in gradient.split(sizes, 1)]  # a batch's objective is its images' mean
        if self.config.inference == "one_shot":
            return [int(score.argmax()) for score in scores]
        everyone = torch.arange(count, device=self.device)
        candidates = [halve(everyone, score) if count > 1 else everyone for score in scores]
        per_batch = list(images.split(sizes))
        undecided = [b for b, held in enumerate(candidates) if len(held) > 1]
        first = self.layers[0]
        for group in self._groups_of_images(undecided, sizes, self._images_per_binary_group(count)):
            first.keeps_candidate_outputs, first.candidate_outputs = True, None
            try:
                for _ in range(binary_rounds(count) - 1):
                    if all(len(candidates[b]) == 1 for b in group):
                        break
                    images_of, held_by = [per_batch[b] for b in group], [candidates[b] for b in group]
                    gradients = self._mixed_alpha_gradients(images_of, held_by, count, rows)
                    for b, gradient_b in zip(group, gradients, strict=True):
                        if len(candidates[b]) > 1:
                            candidates[b] = halve(candidates[b], -gradient_b[candidates[b]])
            finally:
                first.keeps_candidate_outputs, first.candidate_outputs = False, None
        return [int(held[0]) for held in candidates]

    def _images_per_binary_group(self, count: int) -> int:
        """Images whose Binary rounds run together: at most INFERENCE_IMAGES_AT_ONCE, and few enough that the
        first layer's outputs under each of half the candidates (``CandidateOutputs``) fit CANDIDATE_OUTPUT_BYTES."""
        pair_bytes = 4 * self.layers[0].weight.shape[0] * -(-count // 2)
        return max(1, min(INFERENCE_IMAGES_AT_ONCE, CANDIDATE_OUTPUT_BYTES // pair_bytes))

    @staticmethod
    def _groups_of_images(batches: list[int], sizes: list[int], limit: int) -> list[list[int]]:
        """Consecutive batches in groups of at most ``limit`` images (at least one batch each)."""
        groups: list[list[int]] = []
        held = 0
        for b in batches:
            if not groups or held + sizes[b] > limit:
                groups.append([])
                held = 0
            groups[-1].append(b)
            held += sizes[b]
        return groups

    def _mixed_alpha_gradients(
        self, images: list[Tensor], candidates: list[Tensor], count: int, rows: Tensor | None
    ) -> Tensor:
        """Row b: ``d objective_b / d alpha`` for batch b at the uniform superposition of its ``candidates[b]``
        (exact on those candidates, 0 elsewhere), all batches in one forward-backward pass."""
        alpha = torch.zeros(len(images), count, device=self.device)
        for b, held in enumerate(candidates):
            alpha[b, held] = 1.0 / len(held)
        alpha.requires_grad_(True)
        sizes = torch.tensor([len(x) for x in images], device=self.device)
        group = torch.repeat_interleave(torch.arange(len(images), device=self.device), sizes)
        self.state.mode, self.state.alpha, self.state.rows, self.state.group = "mixed", alpha, rows, group
        try:
            with torch.enable_grad():
                logits = self.net(torch.cat(images))
                per_example = objective_per_example(self.config.objective, logits, self.classes)
                (gradient,) = torch.autograd.grad((per_example / sizes[group]).sum(), alpha)
        finally:
            self.state.mode, self.state.alpha, self.state.rows, self.state.group = "train", None, None, None
        return gradient

    def _logits_with(self, slot: int, x: Tensor) -> Tensor:
        self.state.mode, self.state.slot = "slot", slot
        try:
            with torch.no_grad():
                return self.net(x)[:, : self.classes]
        finally:
            self.state.mode, self.state.slot = "train", self.active or 0

    def predict(self, x: Tensor, task: int | None) -> Prediction:
        self._sync()
        if task is not None:
            return Prediction(self._logits_with(self.task_slot[task], x))
        return self._prediction_with(self.infer_slot(x), x)

    def predict_many(self, batches: Sequence[Tensor], task: int | None) -> Iterable[Prediction]:
        batch_size = max((len(x) for x in batches), default=0)
        if task is not None or self.allocated <= 1 or not self._batches_inference(batch_size):
            return (self.predict(x, task) for x in batches)
        self._sync()
        slots = self.infer_slots(batches)
        return (self._prediction_with(slot, x) for slot, x in zip(slots, batches, strict=True))

    def _prediction_with(self, slot: int, x: Tensor) -> Prediction:
        logits = self._logits_with(slot, x)
        if self.scenario == "NNs":
            return Prediction(logits)  # mask numbers are not task numbers here
        return spread_to_label_space(logits, self.slot_task[slot], self.labels)

    # ---- bytes ---------------------------------------------------------------------------------------------------

    def _csc_bytes(self) -> int:
        total = 0
        for index, layer in enumerate(self.layers):
            for slot in range(self.allocated):
                key = (index, slot, layer.bank.versions[slot])
                if key not in self._csc_cache:
                    self._csc_cache[key] = csc16_bytes(layer.bank.mask(slot))
                total += self._csc_cache[key]
        return total

    def _packed_bytes(self) -> int:
        return sum(layer.bank.row_bytes for layer in self.layers) * self.allocated

    def storage(self) -> dict[str, int]:
        self._sync()
        masks = self._packed_bytes() if self.config.storage_format == "packed" else self._csc_bytes()
        parts = {"seed": SEED_BYTES, "masks": masks}
        if self.norms:
            parts["norm_statistics"] = sum(norm.nbytes(self.allocated) for norm in self.norms)
        return parts

    def diagnostics(self) -> dict[str, float]:
        self._sync()
        return {
            "masks": self.allocated,
            "mask_bytes_packed": self._packed_bytes(),
            "mask_bytes_csc16": self._csc_bytes(),
        }
