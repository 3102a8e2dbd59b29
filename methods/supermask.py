"""Supermask machinery shared by SupSup and HopSupSup: fixed random weights, binary masks, packed storage.

- Weights are the *signed Kaiming constant* (SupSup sec. 3.1, Ramanujan et al.
  2020): ``+-c`` with equal probability, ``c = gain / sqrt(fan_in)`` the
  standard deviation of the Kaiming-normal distribution for ReLU (gain
  ``sqrt(2)``), no biases. They are regenerated from the seed, never trained
  or stored.
- Masks come from real-valued scores: ``scores >= 0`` (Mallya et al.'s
  threshold, SupSup sec. 4.2; ``>=`` as in the authors' code), or the top
  fraction of ``|scores|`` per layer (Edge-Popup, sec. 4.1), the same in
  every layer or spread over the layers by the Erdos-Renyi rule (the
  "layer-wise budget" of sec. 4.1). Both pass the gradient straight through
  to the scores.
- Finished masks live in a :class:`MaskBank` as packed bits (one row of
  ``ceil(n / 8)`` bytes per mask). Superposing masks with coefficients alpha
  (eq. 2) and the gradient with respect to alpha are computed over chunks of
  unpacked rows, so task inference over k masks never holds k float copies of
  a layer's weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 23  # unpacked mask elements per chunk (32 MB as float32): bounds inference memory
_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def seeded_generator(seed: int, *purpose: int | str) -> torch.Generator:
    """A CPU generator for one purpose (a layer's weights, a slot's initial scores), independent of the others."""
    words = [w for p in purpose for w in ([p] if isinstance(p, int) else list(p.encode()))]
    state = np.random.SeedSequence([seed, *words]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def signed_kaiming_constant(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """``+-sqrt(2 / fan_in)`` for a linear ``(out, in)`` or conv ``(out, in, kh, kw)`` weight, signs drawn with
    equal probability (SupSup sec. 3.1)."""
    signs = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
    return signs * math.sqrt(2.0 / math.prod(shape[1:]))


def kaiming_uniform_scores(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> Tensor:
    """Scores as ``nn.init.kaiming_uniform_(a=sqrt(5))`` draws them: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class ThresholdMask(torch.autograd.Function):
    """``scores >= 0`` forward, the identity backward (straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: Tensor) -> Tensor:  # noqa: ANN001
        return (scores >= 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad


class TopFractionMask(torch.autograd.Function):
    """Keep the ``fraction`` of the largest entries, the identity backward (Edge-Popup's GetSubnet).

    Applied to ``scores.abs()``, as Edge-Popup does, so that autograd carries
    the sign of each score into its gradient.
    """

    @staticmethod
    def forward(ctx, magnitudes: Tensor, fraction: float) -> Tensor:  # noqa: ANN001
        return top_fraction(magnitudes, fraction).to(magnitudes.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad, None


def top_fraction(magnitudes: Tensor, fraction: float) -> Tensor:
    """Boolean mask of the ``round(fraction * n)`` largest entries."""
    flat = magnitudes.detach().flatten()
    keep = min(flat.numel(), max(1, round(fraction * flat.numel())))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(keep, sorted=False).indices] = True
    return mask.view_as(magnitudes)


def erdos_renyi_densities(shapes: Sequence[tuple[int, ...]], keep: float) -> list[float]:
    """Per-layer fractions kept so that ``keep`` of all weights are kept, each layer's in proportion to
    ``sum(shape) / prod(shape)`` (Erdos-Renyi-Kernel; Mocanu et al. 2018, Evci et al. 2020): small layers stay
    denser. A layer the rule would fill beyond 1 is kept whole and the rest shared by the others."""
    sizes = [math.prod(shape) for shape in shapes]
    raw = [sum(shape) / size for shape, size in zip(shapes, sizes, strict=True)]
    dense: set[int] = set()
    while True:
        budget = keep * sum(sizes) - sum(sizes[i] for i in dense)
        scale = budget / sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        overfull = {i for i in range(len(sizes)) if i not in dense and scale * raw[i] > 1}
        if not overfull:
            return [1.0 if i in dense else scale * raw[i] for i in range(len(sizes))]
        dense |= overfull


def pack_bits(mask: Tensor) -> Tensor:
    """A boolean tensor as uint8 bytes, eight entries per byte, least significant bit first."""
    flat = mask.flatten().to(torch.uint8)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8)).view(-1, 8)
    return (padded << _BIT_SHIFTS.to(mask.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, numel: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Rows of packed bytes ``(..., ceil(numel / 8))`` back to ``(..., numel)`` entries of 0 and 1."""
    bits = (packed.unsqueeze(-1) >> _BIT_SHIFTS.to(packed.device)) & 1
    return bits.flatten(-2)[..., :numel].to(dtype)


_WORKSPACES: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}


def _workspace(device: torch.device, dtype: torch.dtype, bits: int, values: int) -> tuple[Tensor, Tensor]:
    """Buffers for one chunk of unpacked bits (uint8) and values, kept per device and dtype and grown on demand."""
    key = (device, dtype)
    held = _WORKSPACES.get(key)
    if held is None or held[0].numel() < bits or held[1].numel() < values:
        sizes = (bits, values) if held is None else (max(bits, held[0].numel()), max(values, held[1].numel()))
        held = (
            torch.empty(sizes[0], dtype=torch.uint8, device=device),
            torch.empty(sizes[1], dtype=dtype, device=device),
        )
        _WORKSPACES[key] = held
    return held


class MaskBank:
    """The masks of one layer, packed: row ``i`` is mask ``i``. Rows are slots that a method may overwrite.

    ``ones`` keeps the number of masks that keep each entry, so the uniform
    superposition that One-Shot starts from (alpha = 1/k) costs one layer, not k.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.shape = shape
        self.numel = math.prod(shape)
        self.row_bytes = -(-self.numel // 8)
        self.bits = torch.zeros((0, self.row_bytes), dtype=torch.uint8, device=device)
        self.count = 0
        self.ones = torch.zeros(self.numel, dtype=torch.int32, device=device)
        self.versions: list[int] = []  # bumped on every write to a slot: lets callers cache per-slot results

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def to(self, device: torch.device) -> None:
        self.bits, self.ones = self.bits.to(device), self.ones.to(device)

    def append(self, mask: Tensor) -> int:
        """Store a new mask; returns its slot."""
        if self.count == self.bits.shape[0]:  # grow by doubling: appends stay amortised O(row)
            grown = torch.zeros((max(4, 2 * self.count), self.row_bytes), dtype=torch.uint8, device=self.device)
            grown[: self.count] = self.bits[: self.count]
            self.bits = grown
        self.count += 1
        self.bits[self.count - 1] = pack_bits(mask.to(self.device))
        self.ones += mask.flatten().to(self.device, torch.int32)
        self.versions.append(0)
        return self.count - 1

    def replace(self, slot: int, mask: Tensor) -> None:
        self.ones -= self.mask(slot).flatten().to(torch.int32)
        self.bits[slot] = pack_bits(mask.to(self.device))
        self.ones += mask.flatten().to(self.device, torch.int32)
        self.versions[slot] += 1

    def mask(self, slot: int, dtype: torch.dtype = torch.bool) -> Tensor:
        return unpack_bits(self.bits[slot], self.numel, dtype).view(self.shape)

    def _chunks(self, rows: Tensor | None) -> list[Tensor]:
        """Packed rows in chunks of at most CHUNK_ELEMENTS unpacked entries (views when all rows are asked for)."""
        size = max(1, CHUNK_ELEMENTS // (self.row_bytes * 8))
        if rows is None:
            return [self.bits[start : min(start + size, self.count)] for start in range(0, self.count, size)]
        return [self.bits[part] for part in rows.split(size)]

    def _unpacked(self, packed: Tensor, dtype: torch.dtype) -> Tensor:
        """Unpack into a reused workspace: the glibc heap grows without bound if every chunk allocates afresh."""
        rows = len(packed)
        bits, values = _workspace(self.device, dtype, rows * self.row_bytes * 8, rows * self.numel)
        bits = bits[: rows * self.row_bytes * 8].view(rows, self.row_bytes, 8)
        torch.bitwise_right_shift(packed.unsqueeze(-1), _BIT_SHIFTS.to(self.device), out=bits)
        bits.bitwise_and_(1)
        values = values[: rows * self.numel].view(rows, self.numel)
        values.copy_(bits.view(rows, -1)[:, : self.numel])
        return values

    def mix(self, alpha: Tensor, rows: Tensor | None = None) -> Tensor:
        """``sum_i alpha_i M_rows[i]`` as a flat float tensor (eq. 2), from chunks of unpacked rows."""
        total = torch.zeros(self.numel, dtype=alpha.dtype, device=self.device)
        start = 0
        for packed in self._chunks(rows):
            total += alpha[start : start + len(packed)] @ self._unpacked(packed, alpha.dtype)
            start += len(packed)
        return total

    def project(self, vector: Tensor, rows: Tensor | None = None) -> Tensor:
        """``<M_rows[i], vector>`` for every row: the gradient of a superposition with respect to alpha."""
        parts = [self._unpacked(packed, vector.dtype) @ vector for packed in self._chunks(rows)]
        return torch.cat(parts) if parts else vector.new_zeros(0)

    def bilinear(self, weight: Tensor, inputs: Tensor, deltas: Tensor, rows: Tensor | None = None) -> Tensor:
        """``deltas[n] . ((weight * M_rows[i]) @ inputs[n])`` for every row ``i`` and example ``n``, shape
        (rows, N): the per-example gradient of a linear layer's superposition with respect to alpha, without
        forming any per-example (N x |W|) tensor. Each chunk of masks is unpacked once for all N examples and
        applied as one matrix product (chunk*out x in) by (in x N); the N examples go in slices so the products
        stay within CHUNK_ELEMENTS."""
        out_features = weight.shape[0]
        parts = []
        for packed in self._chunks(rows):
            masked = self._unpacked(packed, weight.dtype).view(len(packed), *weight.shape).mul_(weight)
            flat = masked.view(-1, weight.shape[1])
            per_slice = max(1, CHUNK_ELEMENTS // len(flat))
            scores = [
                (flat @ x.T).view(len(packed), out_features, -1).mul_(d.T).sum(1)
                for x, d in zip(inputs.split(per_slice), deltas.split(per_slice), strict=True)
            ]
            parts.append(torch.cat(scores, 1))
        return torch.cat(parts) if parts else weight.new_zeros(0, len(inputs))

    def nbytes(self) -> int:
        return self.count * self.row_bytes


class Superimpose(torch.autograd.Function):
    """``weight * sum_i alpha_i M_i`` with the gradient for alpha only (the weights are fixed).

    The gradient is ``d objective / d alpha_i = <M_i, weight * grad_out>``: one
    projection of the masks on one layer-sized vector, never a stack of k
    masked weights.
    """

    @staticmethod
    def forward(ctx, alpha: Tensor, weight: Tensor, bank: MaskBank, rows: Tensor | None, uniform: bool) -> Tensor:  # noqa: ANN001
        ctx.bank, ctx.rows = bank, rows
        ctx.save_for_backward(weight)
        if uniform:  # alpha = 1/k over every stored mask: the kept-entry counts already hold the sum
            mixed = bank.ones.to(alpha.dtype) * alpha[0]
        else:
            mixed = bank.mix(alpha, rows)
        return weight * mixed.view_as(weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:  # noqa: ANN001
        (weight,) = ctx.saved_tensors
        return ctx.bank.project((grad * weight).flatten(), ctx.rows), None, None, None, None


def csc16_bytes(mask: Tensor) -> int:
    """Bytes of a mask in ``scipy.sparse`` CSC form with 16-bit row indices (SupSup sec. 4.1).

    A binary mask needs no data array; column pointers are int32 because a
    column block may hold more than 65,535 entries. Row indices fit 16 bits for
    every layer here (at most 32,768 output units or kernel positions).
    """
    import scipy.sparse

    matrix = scipy.sparse.csc_matrix(mask.reshape(mask.shape[0], -1).cpu().numpy())
    return matrix.indices.astype(np.int16).nbytes + matrix.indptr.astype(np.int32).nbytes
