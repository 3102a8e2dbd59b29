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
SPARSE_BELOW = 0.75  # bilinear goes unit by unit when a side's nonzero fraction is below this (CPU only)
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


_WORKSPACES: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}


def _workspace(device: torch.device, dtype: torch.dtype, indices: int, values: int) -> tuple[Tensor, Tensor, Tensor]:
    """Buffers for one chunk of packed bytes as int64 indices and of unpacked values, kept per device and dtype and
    grown on demand, and the (256 x 8) table of every byte's bits: a table lookup unpacks 2.4x faster than
    shifting (0.26 against 0.64 ns per entry on these CPUs)."""
    key = (device, dtype)
    held = _WORKSPACES.get(key)
    if held is None or held[0].numel() < indices or held[1].numel() < values:
        sizes = (indices, values) if held is None else (max(indices, held[0].numel()), max(values, held[1].numel()))
        table = ((torch.arange(256, dtype=torch.uint8)[:, None] >> _BIT_SHIFTS) & 1).to(device, dtype)
        held = (
            torch.empty(sizes[0], dtype=torch.int64, device=device),
            torch.empty(sizes[1], dtype=dtype, device=device),
            table,
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
        self._transposed: MaskBank | None = None  # built on demand by transposed()
        self._transposed_versions: list[int] = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_transposed": None, "_transposed_versions": []}  # a cache: not checkpointed

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def to(self, device: torch.device) -> None:
        self.bits, self.ones = self.bits.to(device), self.ones.to(device)
        self._transposed, self._transposed_versions = None, []

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
        """Whole packed rows as (rows x numel) values, in a reused workspace: the glibc heap grows without bound
        if every chunk allocates afresh."""
        rows = len(packed)
        if self.numel == self.row_bytes * 8:
            return self._unpacked_bytes(packed, dtype)
        _, values, table = _workspace(self.device, dtype, 0, rows * self.numel)
        values = values[: rows * self.numel].view(rows, self.numel)
        values.copy_(table[packed.long()].view(rows, -1)[:, : self.numel])  # the last byte is part padding
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
        forming any per-example (N x |W|) tensor.

        Behind a ReLU most of either side is exactly zero (inactive units have zero deltas; a ReLU's outputs
        are half zeros), so on the CPU, where reading the fraction costs no device sync, the sparser side is
        walked unit by unit (``_by_unit``) when it is sparse enough; otherwise every mask is applied densely
        (``_dense_bilinear``). Both give the same sums, up to float reassociation."""
        if self.device.type == "cpu" and len(self.shape) == 2 and len(inputs):
            delta_density = float(deltas.count_nonzero()) / deltas.numel()
            input_density = float(inputs.count_nonzero()) / inputs.numel()
            if min(delta_density, input_density) < SPARSE_BELOW:
                if delta_density <= input_density:
                    return self._by_unit(weight, inputs, deltas, rows)
                return self.transposed()._by_unit(weight.T, deltas, inputs, rows)
        return self._dense_bilinear(weight, inputs, deltas, rows)

    def _dense_bilinear(self, weight: Tensor, inputs: Tensor, deltas: Tensor, rows: Tensor | None) -> Tensor:
        """Each chunk of masks unpacked once for all N examples and applied as one matrix product (chunk*out x
        in) by (in x N); the N examples go in slices so the products stay within CHUNK_ELEMENTS."""
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

    def _by_unit(self, weight: Tensor, inputs: Tensor, deltas: Tensor, rows: Tensor | None) -> Tensor:
        """``bilinear`` one output unit ``o`` at a time, over only the examples whose ``deltas[:, o]`` is nonzero:
        ``(deltas[S, o] * inputs[S] * weight[o]) @ M[:, o, :].T`` added into rows S of the (N x masks) result.
        The units' mask columns are unpacked for all masks at once, a byte-aligned block of units at a time
        (``8 / gcd(in, 8)`` units fill whole bytes), so the products are (|S| x in) by (in x masks)."""
        units, width = self.shape
        count = self.count if rows is None else len(rows)
        result = weight.new_zeros(len(inputs), count)
        if count == 0:
            return result.T
        active = deltas != 0
        examples = active.T.nonzero()[:, 1].split(active.sum(0).tolist())  # per unit, its active examples
        aligned = 8 // math.gcd(width, 8)
        step = max(aligned, CHUNK_ELEMENTS // (count * width) // aligned * aligned)
        for first in range(0, units, step):
            last = min(first + step, units)
            if not any(len(examples[unit]) for unit in range(first, last)):
                continue
            start, stop = first * width // 8, min(-(-last * width // 8), self.row_bytes)
            packed = self.bits[: self.count, start:stop] if rows is None else self.bits[rows, start:stop]
            columns = self._unpacked_bytes(packed, weight.dtype)
            for unit in range(first, last):
                chosen = examples[unit]
                if len(chosen) == 0:
                    continue
                offset = (unit - first) * width
                factors = inputs[chosen] * deltas[chosen, unit : unit + 1] * weight[unit]
                result.index_add_(0, chosen, factors @ columns[:, offset : offset + width].T)
        return result.T

    def _unpacked_bytes(self, packed: Tensor, dtype: torch.dtype) -> Tensor:
        """Any (rows x bytes) block of packed bits as (rows x 8*bytes) values, by table lookup in a reused
        workspace."""
        rows, width = packed.shape
        indices, values, table = _workspace(self.device, dtype, rows * width, rows * width * 8)
        indices = indices[: rows * width].view(rows, width)
        indices.copy_(packed)
        values = values[: rows * width * 8].view(rows * width, 8)
        torch.index_select(table, 0, indices.view(-1), out=values)
        return values.view(rows, width * 8)

    def transposed(self) -> MaskBank:
        """The same masks stored transposed (shape (in, out)), kept up to date slot by slot through ``versions``:
        the input side of ``bilinear`` needs each input unit's column of every mask as whole bytes."""
        if self._transposed is None:
            self._transposed = MaskBank((self.shape[1], self.shape[0]), self.device)
            self._transposed_versions = []
        view, seen = self._transposed, self._transposed_versions
        for slot in range(self.count):
            if slot < len(seen) and seen[slot] == self.versions[slot]:
                continue
            mask = self.mask(slot).T
            if slot < view.count:
                view.replace(slot, mask)
                seen[slot] = self.versions[slot]
            else:
                view.append(mask)
                seen.append(self.versions[slot])
        return view

    def _candidate_chunks(self, weight: Tensor, alpha: Tensor, group: Tensor, rows: Tensor | None):  # noqa: ANN202
        """For ``mixed_forward`` and ``mixed_backward``: chunks of masks, each as (weight * masks (c x out x in),
        its columns of alpha, examples (c x L): for each mask the examples whose alpha on it is nonzero, padded
        with example 0, and their weights (c x L), 0 on the padding). Masks no example uses are skipped; a chunk
        holds at most CHUNK_ELEMENTS unpacked entries and c * L * max(out, in) gathered ones."""
        first = 0
        for packed in self._chunks(rows):
            columns = torch.arange(first, first + len(packed), device=alpha.device)
            first += len(packed)
            used = alpha[:, columns] != 0  # batches x c
            if not bool(used.any()):
                continue
            masked = self._unpacked(packed, alpha.dtype).view(len(packed), *self.shape).mul_(weight)
            per_mask = used[group]  # examples x c
            counts = per_mask.sum(0)
            longest = int(counts.max())
            per_part = max(1, CHUNK_ELEMENTS // max(1, longest * max(self.shape)))
            order = torch.argsort((~per_mask).to(torch.uint8), dim=0, stable=True)[:longest].T  # users first
            for start in range(0, len(packed), per_part):
                part = slice(start, start + per_part)
                if not bool(counts[part].any()):
                    continue
                examples = order[part]
                valid = torch.arange(longest, device=alpha.device) < counts[part, None]
                weights = alpha[group[examples], columns[part, None]] * valid
                yield masked[part], columns[part], examples, weights

    def mixed_forward(self, weight: Tensor, x: Tensor, alpha: Tensor, group: Tensor, rows: Tensor | None) -> Tensor:
        """``(weight * sum_i alpha[group[n], i] M_rows[i]) @ x[n]`` for every example n: a superposition of its
        own per group of examples (Binary's rounds, one group per test batch), each mask applied only to the
        examples that use it, as a batched matrix product."""
        out = x.new_zeros(len(x), self.shape[0])
        for masked, _, examples, weights in self._candidate_chunks(weight, alpha, group, rows):
            outputs = torch.bmm(x[examples], masked.transpose(1, 2)).mul_(weights[..., None])
            out.index_add_(0, examples.flatten(), outputs.view(-1, self.shape[0]))
        return out

    def candidate_outputs(
        self, weight: Tensor, x: Tensor, alpha: Tensor, group: Tensor, rows: Tensor | None
    ) -> CandidateOutputs:
        """``(weight * M_i) @ x[n]`` for every mask i and example n with ``alpha[group[n], i]`` nonzero, kept
        apart: what ``mixed_forward`` sums, for a layer whose input no alpha changes (``CandidateOutputs``)."""
        outputs, examples, columns = [], [], []
        for masked, chunk_columns, chunk_examples, weights in self._candidate_chunks(weight, alpha, group, rows):
            valid = weights != 0
            products = torch.bmm(x[chunk_examples], masked.transpose(1, 2))  # c x L x out
            outputs.append(products[valid])
            examples.append(chunk_examples[valid])
            columns.append(chunk_columns[:, None].expand_as(chunk_examples)[valid])
        if not outputs:
            empty = torch.zeros(0, dtype=torch.long, device=x.device)
            return CandidateOutputs(x.new_zeros(0, self.shape[0]), empty, empty, len(x))
        return CandidateOutputs(torch.cat(outputs), torch.cat(examples), torch.cat(columns), len(x))

    def mixed_backward(
        self,
        weight: Tensor,
        x: Tensor,
        alpha: Tensor,
        group: Tensor,
        rows: Tensor | None,
        grad_out: Tensor,
        for_inputs: bool = True,
    ) -> tuple[Tensor | None, Tensor]:
        """The gradients of ``mixed_forward`` for x and for alpha. That for alpha is exact on alpha's nonzero
        entries, ``sum_{n in group b} grad_out[n] . ((weight * M_i) @ x[n])``, and left 0 elsewhere."""
        grad_x, grad_alpha = torch.zeros_like(x) if for_inputs else None, torch.zeros_like(alpha)
        for masked, columns, examples, weights in self._candidate_chunks(weight, alpha, group, rows):
            inputs = x[examples]
            back = torch.bmm(grad_out[examples], masked)  # c x L x in
            if grad_x is not None:
                grad_x.index_add_(0, examples.flatten(), (back * weights[..., None]).view(-1, self.shape[1]))
            scores = (back * inputs).sum(-1) * (weights != 0)
            grad_alpha.index_put_((group[examples], columns[:, None].expand_as(examples)), scores, accumulate=True)
        return grad_x, grad_alpha

    def nbytes(self) -> int:
        return self.count * self.row_bytes


class CandidateOutputs:
    """A linear layer's outputs under each candidate mask, one row per (example, mask) pair: ``(W * M_i) x_n``.

    For the first masked layer, whose input (the images) no superposition changes, Binary's later rounds
    (SupSup Algorithm 2, each test batch halving its own candidates) need these once: the layer's output under
    any superposition of the candidates is then ``sum_i alpha[group[n], i] (W * M_i) x_n``, a weighted sum of
    kept rows whose gradient for alpha is ``delta_n . (W * M_i) x_n``, instead of every mask applied anew in
    every round. Pairs whose alpha falls to 0 are dropped as the candidates halve.
    """

    def __init__(self, outputs: Tensor, examples: Tensor, columns: Tensor, count: int) -> None:
        self.outputs, self.examples, self.columns, self.count = outputs, examples, columns, count

    def superposed(self, alpha: Tensor, group: Tensor) -> Tensor:
        """The layer's output for every example under its group's row of ``alpha`` (differentiable in alpha)."""
        weights = alpha[group[self.examples], self.columns]
        kept = weights.detach() != 0
        if not bool(kept.all()):
            self.outputs, self.examples, self.columns = self.outputs[kept], self.examples[kept], self.columns[kept]
            weights = weights[kept]
        total = self.outputs.new_zeros(self.count, self.outputs.shape[1])
        return total.index_add(0, self.examples, weights[:, None] * self.outputs)

    def nbytes(self) -> int:
        return self.outputs.numel() * self.outputs.element_size()


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


class MixedSuperimpose(torch.autograd.Function):
    """A linear layer whose examples each apply their own superposition of masks, ``alpha[group[n]]`` (a row of
    alpha per group of examples): ``MaskBank.mixed_forward``. Differentiable in the inputs and, on alpha's
    nonzero entries, in alpha."""

    @staticmethod
    def forward(
        ctx, x: Tensor, alpha: Tensor, weight: Tensor, bank: MaskBank, rows: Tensor | None, group: Tensor
    ) -> Tensor:  # noqa: ANN001
        ctx.bank, ctx.rows = bank, rows
        ctx.save_for_backward(x, alpha, weight, group)
        return bank.mixed_forward(weight, x, alpha, group, rows)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None, None]:  # noqa: ANN001
        x, alpha, weight, group = ctx.saved_tensors
        grad_x, grad_alpha = ctx.bank.mixed_backward(weight, x, alpha, group, ctx.rows, grad, ctx.needs_input_grad[0])
        return grad_x, grad_alpha, None, None, None, None


def csc16_bytes(mask: Tensor) -> int:
    """Bytes of a mask in ``scipy.sparse`` CSC form with 16-bit row indices (SupSup sec. 4.1).

    A binary mask needs no data array; column pointers are int32 because a
    column block may hold more than 65,535 entries. Row indices fit 16 bits for
    every layer here (at most 32,768 output units or kernel positions).
    """
    import scipy.sparse

    matrix = scipy.sparse.csc_matrix(mask.reshape(mask.shape[0], -1).cpu().numpy())
    return matrix.indices.astype(np.int16).nbytes + matrix.indptr.astype(np.int32).nbytes
