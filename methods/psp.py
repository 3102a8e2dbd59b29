"""Parameter Superposition (Cheung et al. 2019): many models in one set of weights, retrieved by a context.

Every linear layer computes ``y = W (c(k) * x)`` (eq. 4 and 7): the input is
bound to the context of task k before the shared weights apply, so each task
sees the weights through its own nearly orthogonal "view". The variants differ
only in the context:

- ``psp_binary``: a random +-1 vector per task and layer; real weights.
- ``psp_complex``: a complex vector of unit modulus and uniform random phase
  per task and layer (eq. 5); complex weights.
- ``psp_rotation``: a Haar-random orthogonal matrix (scipy.stats.ortho_group)
  per task and layer, applied as ``W (C_k x)`` (eq. 3); real weights.
- ``psp_onepower``: task k uses the (k+1)-th power of one complex context
  (eq. 6, tasks numbered from 1), i.e. phases ``(k+1) * phi``.
- ``psp_fast``: for continuous streams, a new complex context every step of a
  ``period``-step cycle, the same ``period`` contexts reused every cycle (sec. 4.1.3).
- ``psp_fast_localmix``: ``psp_fast`` with each context's phase the mean of its
  own and its two neighbours' phases, cyclically (eq. 12).

Choices where the paper is silent, following the authors' public code:

- Complex networks pass the nonlinearity part by part,
  ``relu(Re z) + i relu(Im z)``; the first layer's input is real (imaginary
  part 0); the logits are the real part of the last layer's output.
- Contexts bind every layer, the output layer included. Layers have no bias by
  default, as in eq. 7 and Table 1; ``bias: true`` adds a real bias to every
  layer's output (to the real part of a complex one), initialised at 0, as the
  authors' code does for its complex (``models/linear/complx.py``,
  ``HashLinear``: ``r_a + self.bias``) and rotation (``models/linear/real.py``,
  ``RotateLinear``) layers; their binary layer (``BinaryHashLinear``) holds a
  bias it never adds, i.e. none.
- Real weights start Xavier-normal; complex weights take a Xavier-normal
  magnitude and a uniform phase.
- The authors' configs learn the contexts (``configs/paramsuper.py``:
  ``learn_key = True``); here they are fixed random by default, as the paper
  describes them, and ``learn_contexts: true`` makes them parameters (binary:
  real-valued, starting at +-1; complex: the phases; rotation: the matrices,
  starting orthogonal, not kept orthogonal, as in ``RotateLinear``). For the
  complex variants ``learn_modulus: true`` (with ``learn_contexts``) learns each
  context's real and imaginary parts instead of its phases, so its modulus may
  leave 1, as the authors' ``HashLinear`` keeps its context ``o`` as a free
  complex parameter; one-power then uses the base context's modulus with
  ``(k+1)`` times its phase (their ``pick_key(..., 'one_power')``), the local mix
  the mean modulus over all contexts (their ``'local_mix'``).
- One-power numbers tasks from 1 as eq. 6 does (task k uses ``c^(k+1)``); the
  authors' ``'one_power'`` key uses ``c^k``, so their task 0 is unbound.
- Fixed contexts are regenerated from the cell's seed, one seed per layer and
  context, never trained or saved; ``storage()`` still counts them as Table 1
  does, so that bytes compare with the paper.
- ``psp_fast`` keys contexts by the step, and predicts a task with the context
  of the step at which that task began (the 0-degree test set with context 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ortho_group
from torch import Tensor, nn

from methods.base import BuildContext, Method, Prediction, register_method, tensor_bytes
from methods.norms import batch_statistics, normalise

Index = int  # which context of a bank a forward pass uses


def layer_seed(seed: int, layer: int, purpose: str) -> int:
    return int(np.random.SeedSequence([seed, layer, *purpose.encode()]).generate_state(1)[0])


class ContextState:
    """The context index every layer of one network reads; the method sets it before each forward pass."""

    def __init__(self) -> None:
        self.index: Index = 0


class ContextBank(nn.Module):
    """The contexts of one layer. ``bind(x, index)`` returns the layer input bound to a context."""

    complex_valued: ClassVar[bool] = False

    def prepare(self, index: Index, device: torch.device) -> None:
        """Make the context of ``index`` if it is made lazily (before training with it starts)."""

    def bind(self, x: Tensor, index: Index) -> Tensor:
        raise NotImplementedError

    def bytes_for(self, indices: set[Index]) -> int:
        """Bytes of Table 1 needed to keep the contexts of these indices."""
        raise NotImplementedError


class BinaryBank(ContextBank):
    def __init__(self, size: int, count: int, seed: int, learn: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (count, size), generator=g).float() * 2 - 1
        self.size = size
        if learn:
            self.contexts = nn.Parameter(signs)
        else:
            self.register_buffer("contexts", signs, persistent=False)

    def bind(self, x: Tensor, index: Index) -> Tensor:
        return x * self.contexts[index]

    def bytes_for(self, indices: set[Index]) -> int:
        per_context = math.ceil(self.size / 8) if not isinstance(self.contexts, nn.Parameter) else self.size * 4
        return len(indices) * per_context  # M bits each (M floats once learned)


class PhaseBank(ContextBank):
    """Complex contexts of unit modulus: ``exp(i * phase)``, optionally phase-mixed with neighbours (eq. 12)."""

    complex_valued = True

    def __init__(
        self, size: int, count: int, seed: int, learn: bool, local_mix: bool = False, learn_modulus: bool = False
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        phases = (torch.rand(count, size, generator=g) * 2 - 1) * math.pi
        self.size = size
        self.local_mix = local_mix
        self.cartesian = learn and learn_modulus  # the context itself is the parameter: modulus free
        if self.cartesian:
            self.values = nn.Parameter(torch.polar(torch.ones_like(phases), phases))
        elif learn:
            self.phases = nn.Parameter(phases)
        else:
            self.register_buffer("phases", phases, persistent=False)

    def all_phases(self) -> Tensor:
        return self.values.angle() if self.cartesian else self.phases

    def phase(self, index: Index) -> Tensor:
        phases = self.all_phases()
        if not self.local_mix:
            return phases[index]
        count = len(phases)
        neighbours = [(index - 1) % count, index % count, (index + 1) % count]
        return phases[neighbours].mean(0)

    def context(self, index: Index) -> Tensor:
        if self.cartesian and not self.local_mix:
            return self.values[index]
        phase = self.phase(index)
        modulus = self.values.abs().mean(0) if self.cartesian else torch.ones_like(phase)
        return torch.polar(modulus, phase)

    def bind(self, x: Tensor, index: Index) -> Tensor:
        return x * self.context(index)

    def bytes_for(self, indices: set[Index]) -> int:
        return len(indices) * self.size * (8 if self.cartesian else 4)  # M phases (float32) each, or M complex64


class OnePowerBank(ContextBank):
    """Task k binds with ``c^(k+1)``: phases ``(k+1) * phi`` of one base context (eq. 6)."""

    complex_valued = True

    def __init__(self, size: int, count: int, seed: int, learn: bool, learn_modulus: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        base = (torch.rand(size, generator=g) * 2 - 1) * math.pi
        self.size = size
        self.cartesian = learn and learn_modulus
        if self.cartesian:  # the base context is the parameter; its power keeps its modulus, as in 'one_power'
            self.values = nn.Parameter(torch.polar(torch.ones_like(base), base))
        elif learn:
            self.base = nn.Parameter(base)
        else:
            self.register_buffer("base", base, persistent=False)

    def bind(self, x: Tensor, index: Index) -> Tensor:
        if self.cartesian:
            return x * torch.polar(self.values.abs(), (index + 1) * self.values.angle())
        phase = (index + 1) * self.base
        return x * torch.polar(torch.ones_like(phase), phase)

    def bytes_for(self, indices: set[Index]) -> int:
        base = self.size * (8 if self.cartesian else 4)
        return base + len(indices) * 4  # M phases (or M complex numbers) once, then one number (the power) per task


class RotationBank(ContextBank):
    """A Haar-random orthogonal matrix per context, drawn with scipy.stats.ortho_group when first used.

    Fixed matrices are buffers (``fixed_<index>``), so that they belong to the module like learned ones; ``prepare``
    draws the current task's before its training starts (a fused group stacks them then).
    """

    def __init__(self, size: int, count: int, seed: int, learn: bool) -> None:
        super().__init__()
        self.size = size
        self.seed = seed
        self.learn = learn
        self.count = count
        self.matrices = nn.ParameterDict()
        if learn:  # learnable contexts must exist before the optimiser is built
            for index in range(count):
                self.matrices[str(index)] = nn.Parameter(self._draw(index))

    def _draw(self, index: Index) -> Tensor:
        matrix = ortho_group.rvs(self.size, random_state=layer_seed(self.seed, index, "rotation"))
        return torch.from_numpy(np.asarray(matrix, dtype=np.float32))

    def matrix(self, index: Index, device: torch.device) -> Tensor:
        if self.learn:
            return self.matrices[str(index)]
        name = f"fixed_{index}"
        if name not in self._buffers:
            self.register_buffer(name, self._draw(index).to(device), persistent=False)
        return self._buffers[name]

    def prepare(self, index: Index, device: torch.device) -> None:
        self.matrix(index, device)

    def bind(self, x: Tensor, index: Index) -> Tensor:
        return x @ self.matrix(index, x.device).T

    def bytes_for(self, indices: set[Index]) -> int:
        return len(indices) * self.size * self.size * 4  # M^2 floats each


class PSPLinear(nn.Module):
    """``y = W (c(k) * x)`` (+ b): a linear map whose input is bound to the current context (eq. 7).

    ``bias`` adds a real, shared (not per-context) bias initialised at 0 to the output, to its real part when
    complex, as the authors' ``HashLinear`` and ``RotateLinear`` do; the paper's eq. 7 has none (the default).
    """

    def __init__(
        self, in_features: int, out_features: int, bank: ContextBank, state: ContextState, bias: bool = False
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.bank = bank
        self.state = state
        magnitude = nn.init.xavier_normal_(torch.empty(out_features, in_features))
        if bank.complex_valued:
            phase = (torch.rand(out_features, in_features) * 2 - 1) * math.pi
            self.weight = nn.Parameter(torch.polar(magnitude.abs(), phase + math.pi * (magnitude < 0)))
        else:
            self.weight = nn.Parameter(magnitude)

    def forward(self, x: Tensor) -> Tensor:
        if self.bank.complex_valued and not x.is_complex():
            x = x.to(torch.complex64)
        out = F.linear(self.bank.bind(x, self.state.index), self.weight)
        return out if self.bias is None else out + self.bias  # a real bias shifts the real part only


class PSPConv2d(nn.Module):
    """A convolution whose kernel is bound to the current context (eq. 8): ``x * (w . c(k))``.

    The context covers one output channel's kernel (M x Hw x Ww) and multiplies
    every output channel's, which by associativity equals binding the input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 bank: ContextBank, state: ContextState, bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.inner = PSPLinear(in_channels * kernel_size * kernel_size, out_channels, bank, state, bias)
        self.shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        bank, state = self.inner.bank, self.inner.state
        if bank.complex_valued and not x.is_complex():
            x = x.to(torch.complex64)
        kernel = bank.bind(self.inner.weight, state.index).reshape(self.shape)
        bias = self.inner.bias
        out = F.conv2d(x, kernel, stride=self.stride, padding=self.padding)
        return out if bias is None else out + bias[:, None, None]


class ContextBatchNorm(nn.Module):
    """Non-affine batch norm with running statistics per context, since each context retrieves its own model.

    Complex feature maps are normalised part by part, like ``SplitReLU``.
    """

    def __init__(self, num_features: int, state: ContextState, per_context: bool, momentum: float = 0.1) -> None:
        super().__init__()
        self.state, self.momentum, self.num_features = state, momentum, num_features
        self.per_context = per_context
        self.statistics: dict[tuple[Index, int], tuple[Tensor, Tensor]] = {}

    def _normalise(self, x: Tensor, part: int) -> Tensor:
        key = (self.state.index if self.per_context else 0, part)
        if key not in self.statistics:
            features = self.num_features
            self.statistics[key] = (torch.zeros(features, device=x.device), torch.ones(features, device=x.device))
        running_mean, running_var = self.statistics[key]
        if self.training:
            mean, var = batch_statistics(x, running_mean, running_var, self.momentum)
        else:
            mean, var = running_mean, running_var
        return normalise(x, mean, var)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_complex():
            return torch.complex(self._normalise(x.real, 0), self._normalise(x.imag, 1))
        return self._normalise(x, 0)

    def nbytes(self) -> int:
        return sum(2 * mean.numel() * mean.element_size() for mean, _ in self.statistics.values())


class SplitReLU(nn.Module):
    """ReLU on the real and the imaginary part separately (the authors' complex networks)."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.complex(F.relu(z.real), F.relu(z.imag)) if z.is_complex() else F.relu(z)


class PSPKit:
    """The layer kit of a PSP network: every linear layer gets its own context bank from ``make_bank``."""

    def __init__(self, make_bank, state: ContextState, per_context_norm: bool = True, bias: bool = False) -> None:  # noqa: ANN001
        self.make_bank = make_bank
        self.bias = bias
        self.state = state
        self.per_context_norm = per_context_norm
        self.layers: list[PSPLinear] = []  # every weight, the convolutions' included
        self.norms: list[ContextBatchNorm] = []

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        bank = self.make_bank(in_features, len(self.layers))
        layer = PSPLinear(in_features, out_features, bank, self.state, self.bias)
        self.layers.append(layer)
        return layer

    def activation(self, num_features: int) -> nn.Module:
        return SplitReLU()

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
        bank = self.make_bank(in_channels * kernel_size * kernel_size, len(self.layers))
        layer = PSPConv2d(in_channels, out_channels, kernel_size, stride, padding, bank, self.state, self.bias)
        self.layers.append(layer.inner)
        return layer

    def norm(self, num_features: int) -> nn.Module:
        layer = ContextBatchNorm(num_features, self.state, self.per_context_norm)
        self.norms.append(layer)
        return layer


@dataclass(frozen=True)
class PSPConfig:
    learn_contexts: bool = False  # fixed random contexts (the paper), or trainable ones (the authors' configs)
    bias: bool = False  # a real bias on every layer's output, 0 at the start (the authors' complex and rotation layers)


@dataclass(frozen=True)
class PSPComplexConfig(PSPConfig):
    # with learn_contexts: learn each context's real and imaginary parts, modulus free (the authors' HashLinear),
    # instead of its phases alone
    learn_modulus: bool = False

    def __post_init__(self) -> None:
        if self.learn_modulus and not self.learn_contexts:
            raise ValueError("learn_modulus: true needs learn_contexts: true (fixed contexts have modulus 1)")


@dataclass(frozen=True)
class PSPFastConfig(PSPComplexConfig):
    period: int = field(default=1000, metadata={"min": 1})  # steps in one cycle: a context per step, reused each cycle


class PSP(Method):
    """Shared machinery; each registered variant says how its contexts are made and indexed."""

    version = "1"
    Config = PSPConfig
    config: PSPConfig
    scenarios = frozenset({"GG"})  # the context comes from the given task (or time)

    bank: ClassVar[type[ContextBank]]  # the kind of context every layer gets
    # batch-norm statistics per context (each context is a model); off where contexts change every step
    per_context_norm: ClassVar[bool] = True
    fusion_unavailable = None  # its contexts are parameters or buffers; the context index is the same in every cell

    def make_bank(self, size: int, count: int, seed: int, learn: bool) -> ContextBank:
        return self.bank(size, count, seed, learn)  # type: ignore[call-arg]

    def context_count(self, context: BuildContext) -> int:
        return context.label_space.num_tasks

    def build(self, context: BuildContext) -> nn.Module:
        self.state = ContextState()
        learn = self.config.learn_contexts  # type: ignore[attr-defined]
        count = self.context_count(context)

        def bank(size: int, layer: int) -> ContextBank:
            return self.make_bank(size, count, layer_seed(context.seed, layer, self.name), learn)

        torch.manual_seed(layer_seed(context.seed, 0, "weights"))
        kit = PSPKit(bank, self.state, self.per_context_norm, self.config.bias)  # type: ignore[attr-defined]
        backbone = context.make_backbone(kit)
        self.net = backbone.with_head(kit, context.label_space.num_outputs)
        self.layers = kit.layers
        self.norms = kit.norms
        self.used: set[Index] = set()
        return self.net

    def index_for(self, task: int | None) -> Index:
        assert task is not None, "PSP needs the task (GG)"
        return task

    def begin_segment(self, task: int | None, step: int) -> None:
        self.state.index = self.index_for(task)
        for layer in self.layers:
            layer.bank.prepare(self.state.index, layer.weight.device)

    def fused_entry(self, task: int | None) -> nn.Module:
        return self.net

    def logits(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.real if out.is_complex() else out

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        self.state.index = self.index_for(task)
        self.used.add(self.state.index)
        return F.cross_entropy(self.logits(x), y)

    @torch.no_grad()
    def predict(self, x: Tensor, task: int | None) -> Prediction:
        self.state.index = self.index_for(task)
        return Prediction(self.logits(x))

    def storage(self) -> dict[str, int]:
        """Table 1: the shared weights (complex ones count twice), plus each context in use."""
        parts = {
            "weights": tensor_bytes(layer.weight for layer in self.layers),
            "contexts": sum(layer.bank.bytes_for(self.used) for layer in self.layers),
        }
        if self.config.bias:  # type: ignore[attr-defined]
            parts["biases"] = tensor_bytes(layer.bias for layer in self.layers if layer.bias is not None)
        if self.norms:
            parts["norm_statistics"] = sum(norm.nbytes() for norm in self.norms)
        return parts


@register_method("psp_binary")
class PSPBinary(PSP):
    relative_speed = {"fc": 0.85, "conv": 0.75}
    bank = BinaryBank


@register_method("psp_complex")
class PSPComplex(PSP):
    relative_speed = {"fc": 0.3, "conv": 0.2}
    Config = PSPComplexConfig
    bank = PhaseBank

    def make_bank(self, size: int, count: int, seed: int, learn: bool) -> ContextBank:
        return PhaseBank(size, count, seed, learn, learn_modulus=self.config.learn_modulus)  # type: ignore[attr-defined]


@register_method("psp_rotation")
class PSPRotation(PSP):
    relative_speed = {"fc": 0.46}
    bank = RotationBank
    backbones = frozenset({"fc"})  # on kernels a context would be (M Hw Ww)^2 numbers per layer and task


@register_method("psp_onepower")
class PSPOnePower(PSP):
    relative_speed = {"fc": 0.3, "conv": 0.21}
    Config = PSPComplexConfig
    bank = OnePowerBank

    def make_bank(self, size: int, count: int, seed: int, learn: bool) -> ContextBank:
        return OnePowerBank(size, count, seed, learn, learn_modulus=self.config.learn_modulus)  # type: ignore[attr-defined]


@register_method("psp_fast")
class PSPFast(PSP):
    """A context per step of the cycle: only the period is known, not the task (sec. 4.1.3)."""

    relative_speed = {"fc": 0.31}

    Config = PSPFastConfig
    local_mix: ClassVar[bool] = False
    per_context_norm = False  # a context per step could never gather statistics of its own
    # on the width-4 ResNet of the registry test (one batch per context) it stayed at chance: not validated
    backbones = frozenset({"fc"})
    config: PSPFastConfig

    def context_count(self, context: BuildContext) -> int:
        return self.config.period

    def make_bank(self, size: int, count: int, seed: int, learn: bool) -> ContextBank:
        return PhaseBank(size, count, seed, learn, local_mix=self.local_mix, learn_modulus=self.config.learn_modulus)

    def build(self, context: BuildContext) -> nn.Module:
        self.step = 0
        self.task_start: dict[int, int] = {}
        return super().build(context)

    def begin_segment(self, task: int | None, step: int) -> None:
        self.step = step
        if task is not None:
            self.task_start.setdefault(task, step)

    def loss(self, x: Tensor, y: Tensor, task: int | None) -> Tensor:
        self.state.index = self.step % self.config.period
        self.used.add(self.state.index)
        return F.cross_entropy(self.logits(x), y)

    def after_step(self, step: int) -> None:
        self.step = step + 1

    def index_for(self, task: int | None) -> Index:
        assert task is not None, "psp_fast predicts a task with the context of the step that task began"
        return self.task_start.get(task, 0) % self.config.period


@register_method("psp_fast_localmix")
class PSPFastLocalMix(PSPFast):
    relative_speed = {"fc": 0.31}
    local_mix = True
