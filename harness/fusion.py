"""Fused cells: cells that differ only in seed (or in settings their method declares safe) trained as one batched
computation, each still a cell of its own with its own rows, checkpoints and failures (issue 17).

Every member is built exactly as if it ran alone: its own ``Loop`` with its stream, method, module, optimiser and
random state. Then every tensor of the members' modules (parameters and buffers) is re-pointed (``tensor.data``)
at one slice of a stacked ``[K, ...]`` tensor, so that each member's own hooks (``begin_segment``, ``after_step``,
``end_segment``, ``predict``, its checkpoints) read and write the fused values without knowing it. One training
step then

1. draws each member's batch from its own stream;
2. runs each member's ``loss`` in turn; the first call of the method's fused entry (``Method.fused_entry``: the
   network, or its trunk) on the member's batch returns that member's slice of one ``torch.func.vmap`` forward pass
   of all K members' entries over their stacked tensors;
3. sums the K losses and back-propagates once, adds to each member's slice of the stacked gradient what its loss
   computed outside the entry (an EWC or SI penalty, a head), and hands each member its gradient as ``.grad``;
4. takes one step of one optimiser over the stacked tensors: SGD, RMSprop and Adam act element by element, so this
   is exactly K independent optimisers (their states are cut back into each member's own optimiser for its
   checkpoints, and stacked again from them on resume);
5. runs each member's ``after_step``, counting, probes and progress.

Evaluation stays member by member (``predict`` is the method's own, unfused). Random draws a member makes (EWC's
sampled Fisher labels) use its own random state, swapped in for each of its turns.

Safety: at the first step of every segment the fused entry's output for every member is compared with the member's
own forward pass; a method that keeps state outside its module's parameters and buffers (a plain dict of tensors)
would give every member the first member's state, and is caught there. That, or anything else the fused step
cannot do (a different optimiser per member, vmap refusing an operation), raises ``FusionError``: the members go on
alone from where they are, exactly as if they had never been fused. A member whose own hooks fail (a NaN loss found
at an evaluation) fails alone; the others are regrouped and go on.
"""

from __future__ import annotations

import json
import math
import pickle
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from harness.cells import Cell
from harness.checkpoint import Position, random_states, restore_random_states
from harness.estimate import fusion_pays
from harness.presets import spec_from_dict
from harness.runner import CellResult, Loop, WorkerSettings, make_run_row, run_cell
from methods import METHODS
from scenarios.streams import Segment

DEFAULT_FUSE_MAX = 8  # cells per fused group (--fuse-max); larger groups hold more stacked memory per worker
VERIFY_TOLERANCE = 1e-4  # largest difference, relative to the output's scale, between fused and own forward passes


class FusionError(RuntimeError):
    """What the fused computation cannot do for this group; its members go on alone."""


# ---- which cells fuse ---------------------------------------------------------------------------------------------


FUSE_MODES = ("auto", "on", "off")  # auto: where it was measured to pay on the device; on: wherever it can


def unfusable_reason(cell: Cell, mode: str = "on", device: str = "cpu") -> str | None:
    """Why this cell must run alone, or None when it may be fused with others like it."""
    method = METHODS.get(cell.method)
    if method.fusion_unavailable is not None:
        return f"{cell.method}: {method.fusion_unavailable}"
    kind = spec_from_dict(cell.backbone).kind
    if kind != "fc":
        return "convolutional backbone: batch norm updates its running statistics in place inside the forward pass"
    if mode == "auto" and not fusion_pays(device, kind):
        return f"fused cells were measured no faster than cells alone on {device} (bench/fusion.py); --fuse on fuses"
    return None


def fusion_key(cell: Cell) -> str:
    """Cells with the same key may train as one computation: everything but the seed and the settings the method
    declares fusable (``Method.fusable_settings``) is equal."""
    method = METHODS.get(cell.method)
    config = {k: v for k, v in cell.method_config.items() if k not in method.fusable_settings}
    identity = {**cell.identity(), "method_config": config, "seed": None}
    return json.dumps(identity, sort_keys=True)


@dataclass(frozen=True)
class FusionPlan:
    groups: list[list[Cell]]  # in the cells' order; a group of one runs alone
    alone: dict[str, str] = field(default_factory=dict)  # cell_id -> why it runs alone (unfusable cells only)


def plan_fusion(
    cells: Sequence[Cell], max_cells: int, slots: int = 1, mode: str = "on", device: str = "cpu"
) -> FusionPlan:
    """Groups of at most ``max_cells`` fusable cells with equal keys, in the order their first cell comes; groups
    are split again while there are fewer than ``slots`` (cells run at once), since a fused group gains less
    than a slot left idle loses."""
    if mode not in FUSE_MODES:
        raise ValueError(f"fusion mode must be one of {', '.join(FUSE_MODES)}, got {mode!r}")
    if mode == "off" or max_cells < 2:
        return FusionPlan([[c] for c in cells])
    by_key: dict[str, list[Cell]] = {}
    order: list[str | Cell] = []
    alone: dict[str, str] = {}
    for cell in cells:
        reason = unfusable_reason(cell, mode, device)
        if reason is not None:
            alone[cell.cell_id] = reason
            order.append(cell)
            continue
        key = fusion_key(cell)
        if key not in by_key:
            by_key[key] = []
            order.append(key)
        by_key[key].append(cell)
    counts = {key: -(-len(group) // max_cells) for key, group in by_key.items()}  # groups per key
    while len(alone) + sum(counts.values()) < slots:
        splittable = [k for k in counts if counts[k] < len(by_key[k])]
        if not splittable:
            break
        widest = max(splittable, key=lambda k: len(by_key[k]) / counts[k])
        counts[widest] += 1
    groups: list[list[Cell]] = []
    for item in order:
        if isinstance(item, Cell):
            groups.append([item])
            continue
        members, parts = by_key[item], counts[item]
        size = -(-len(members) // parts)
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return FusionPlan(groups, alone)


# ---- the stacked tensors ------------------------------------------------------------------------------------------


def _module_tensors(root: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    return dict(root.named_parameters()), dict(root.named_buffers())


class Stacks:
    """The members' module tensors as stacked ``[K, ...]`` tensors; each member's tensor is a view of its slice."""

    def __init__(self, roots: Sequence[nn.Module]) -> None:
        self.roots = list(roots)
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.members: dict[str, list[Tensor]] = {}  # name -> each member's own tensor object
        self.name_of: dict[int, str] = {}  # id of any member's tensor -> its name
        self.watch: list[tuple[Tensor, int]] = []
        self.restack()

    def restack(self) -> None:
        """Take up tensors added or replaced since the last call (a new head, contexts registered lazily)."""
        named = [_module_tensors(root) for root in self.roots]
        for kind, stacks in ((0, self.params), (1, self.buffers)):
            names = list(named[0][kind])
            for index, tables in enumerate(named[1:], start=1):
                if list(tables[kind]) != names:
                    raise FusionError(f"member {index}'s module has other tensors than member 0's")
            for name in names:
                tensors = [tables[kind][name] for tables in named]
                first = tensors[0]
                for t in tensors[1:]:
                    if t.shape != first.shape or t.dtype != first.dtype or t.device != first.device:
                        raise FusionError(f"{name}: shapes {tuple(first.shape)} and {tuple(t.shape)} differ")
                stacked = stacks.get(name)
                if stacked is not None and all(t.data_ptr() == stacked[k].data_ptr() for k, t in enumerate(tensors)):
                    self.members[name] = tensors
                    continue
                values = torch.stack([t.detach() for t in tensors])
                if stacked is not None and stacked.shape == values.shape and stacked.dtype == values.dtype:
                    with torch.no_grad():
                        stacked.copy_(values)  # the same tensor: an optimiser over it keeps its state
                else:
                    stacked = values.requires_grad_(kind == 0)
                    stacks[name] = stacked
                for k, t in enumerate(tensors):
                    t.data = stacked.detach()[k]
                self.members[name] = tensors
            for gone in set(stacks) - set(names):
                del stacks[gone]
        self.name_of = {id(t): name for name, tensors in self.members.items() for t in tensors}
        self.watch = [(t, t.data_ptr()) for tensors in self.members.values() for t in tensors]
        self.sync_requires_grad()

    def intact(self) -> bool:
        """No member's tensor was re-pointed or replaced since the last ``restack``."""
        return all(t.data_ptr() == ptr for t, ptr in self.watch)

    def sync_requires_grad(self) -> None:
        """A stacked parameter takes gradients exactly when its members' do (a frozen trunk takes none); members
        change that only in their segment hooks, after which the group restacks."""
        for name, stacked in self.params.items():
            flags = {t.requires_grad for t in self.members[name]}
            if len(flags) > 1:
                raise FusionError(f"{name}: some members train it and others do not")
            stacked.requires_grad_(flags.pop())

    def entry_tensors(self, entry: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The stacked tensors of member 0's ``entry``, by their names within it."""
        params, buffers = {}, {}
        for name, t in entry.named_parameters():
            params[name] = self.params[self._full_name(t, name)]
        for name, t in entry.named_buffers():
            buffers[name] = self.buffers[self._full_name(t, name)]
        return params, buffers

    def _full_name(self, tensor: Tensor, name: str) -> str:
        full = self.name_of.get(id(tensor))
        if full is None:
            raise FusionError(f"the fused entry's tensor {name} is not in the method's module")
        return full

    def own_storage(self, member: int) -> Iterator[None]:
        """Each of a member's tensors on storage of its own for a while (a checkpoint must not save the stacks)."""
        return _own_storage([tensors[member] for tensors in self.members.values()])

    def unstack(self) -> None:
        """Give every member's tensors storage of their own again: the members are no longer fused."""
        for tensors in self.members.values():
            for t in tensors:
                t.data = t.data.clone()
                t.grad = None
        self.params.clear()
        self.buffers.clear()
        self.members.clear()
        self.watch = []


@contextmanager
def _own_storage(tensors: list[Tensor]) -> Iterator[None]:
    views = [t.data for t in tensors]
    grads = [t.grad for t in tensors]
    try:
        for t, view in zip(tensors, views, strict=True):
            t.data = view.clone()
            t.grad = None
        yield
    finally:
        for t, view, g in zip(tensors, views, grads, strict=True):
            t.data = view
            t.grad = g


# ---- the optimiser ------------------------------------------------------------------------------------------------


def _options(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


class FusedOptimizer:
    """One optimiser over the stacked tensors in place of the members' own (same type, groups and options)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], stacks: Stacks) -> None:
        self.sources = list(optimizers)
        self.stacks = stacks
        first = optimizers[0]
        if len({type(o) for o in optimizers}) > 1 or len({len(o.param_groups) for o in optimizers}) > 1:
            raise FusionError("the members' optimisers differ in type or in their parameter groups")
        self.names: list[str] = []  # the stacked tensors trained, in the order of member 0's groups
        groups = []
        for index, group in enumerate(first.param_groups):
            names = [stacks.name_of.get(id(p)) for p in group["params"]]
            for k, other in enumerate(optimizers[1:], start=1):
                own = other.param_groups[index]
                if _options(own) != _options(group):
                    raise FusionError(f"member {k}'s optimiser has other settings than member 0's")
                if [stacks.name_of.get(id(p)) for p in own["params"]] != names:
                    raise FusionError(f"member {k}'s optimiser trains other tensors than member 0's")
            trained = [n for n in names if n is not None and n in stacks.params]  # None: make_optimizer's stand-in
            self.names += trained
            if trained:
                groups.append({**_options(group), "params": [stacks.params[n] for n in trained]})
        if not groups:  # the members train nothing for now: a stand-in, as make_optimizer does
            groups = [{**_options(first.param_groups[0]), "params": [nn.Parameter(torch.zeros(()))]}]
        try:
            self.optimizer = type(first)(groups, **first.defaults)
        except (TypeError, ValueError) as error:
            raise FusionError(f"cannot make one {type(first).__name__} over the stacks: {error}") from None
        self.import_states()

    def import_states(self) -> None:
        """Stack the members' optimiser states (after a resume or a regroup); none is the fresh start of all."""
        for name in self.names:
            stacked, members = self.stacks.params[name], self.stacks.members[name]
            states = [opt.state.get(p) for opt, p in zip(self.sources, members, strict=True)]
            if all(not s for s in states):
                continue
            if any(not s for s in states):
                raise FusionError("some members' optimisers have state for a tensor and others not")
            merged: dict[str, Any] = {}
            for key, value in states[0].items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape == members[0].shape:
                    merged[key] = torch.stack([s[key] for s in states])
                elif all(_same(s[key], value) for s in states[1:]):
                    merged[key] = value.clone() if isinstance(value, Tensor) else value
                else:
                    raise FusionError(f"the members' optimiser states differ in {key!r}")
            self.optimizer.state[stacked] = merged
        self.clear_exported()

    def export_states(self) -> None:
        """Each member's slice of the state into its own optimiser (for its checkpoint, or to go on alone)."""
        for name in self.names:
            stacked, members = self.stacks.params[name], self.stacks.members[name]
            state = self.optimizer.state.get(stacked)
            if not state:
                continue
            for k, (opt, p) in enumerate(zip(self.sources, members, strict=True)):
                opt.state[p] = {
                    key: (value[k].clone() if value.dim() > 0 and value.shape == stacked.shape else value.clone())
                    if isinstance(value, Tensor)
                    else value
                    for key, value in state.items()
                }

    def clear_exported(self) -> None:
        for opt in self.sources:
            opt.state.clear()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


# ---- the group ----------------------------------------------------------------------------------------------------


@dataclass
class Member:
    cell: Cell
    loop: Loop  # None only for a member that failed to build (it has its result)
    started: float
    random: dict[str, Any] = field(default_factory=dict)  # its random states (harness.checkpoint) between turns
    segments: list[Segment] = field(default_factory=list)  # its stream's, listed once
    result: CellResult | None = None

    @contextmanager
    def turn(self, full: bool) -> Iterator[None]:
        """The member's random state while it runs (its draws never interleave with another member's): all of
        them (``full``), or only torch's, the one a training step may draw from, within a step."""
        if full:
            restore_random_states(self.random)
        else:
            torch.set_rng_state(self.random["torch"])
        try:
            yield
        finally:
            if full:
                self.random = random_states()
            else:
                self.random["torch"] = torch.get_rng_state()


START = Position(-1, None)  # "go on alone from the member's own start": no hook of the group has run yet


class FusedGroup:
    """K members trained in lockstep as one computation."""

    def __init__(self, cells: Sequence[Cell], settings: WorkerSettings) -> None:
        self.settings = settings
        self.members: list[Member] = []
        self.done: list[Member] = []  # members with a result: failed, or gone on alone
        self.note = ""  # why the group stopped being fused, if it did
        torch.set_num_threads(max(1, settings.threads))
        for cell in cells:
            started = time.time()
            try:
                loop = Loop(cell, settings)
            except Exception as exc:
                run = make_run_row(cell, settings, None, started, exc, traceback.format_exc())
                self.done.append(Member(cell, None, started, result=CellResult(run=run, evals=[])))  # type: ignore[arg-type]
                continue
            self.members.append(Member(cell, loop, started, random_states(), loop.stream.segments()))
        self.size = len(self.members)
        self.stacks: Stacks | None = None
        self.optimizer: FusedOptimizer | None = None
        self.optimizer_sources: list[int] = []
        # Where every member could go on alone exactly as if never fused: START, a place in a segment, or None
        # (nowhere: a member goes on alone from its last checkpoint, or afresh)
        self.exact: Position | None = START

    # -- fusing and unfusing

    def fuse(self) -> None:
        self.stacks = Stacks([m.loop.module for m in self.members])
        self.optimizer = None
        self.sync_optimizer()

    def unfuse(self) -> None:
        """The members go back to tensors and optimiser states of their own."""
        if self.optimizer is not None:
            self.optimizer.export_states()
        if self.stacks is not None:
            self.stacks.unstack()
        self.stacks = None
        self.optimizer = None

    def regroup(self) -> None:
        self.unfuse()
        if self.members:
            self.fuse()

    def sync_optimizer(self) -> None:
        """A fused optimiser over the stacks whenever the members' hooks started fresh ones of their own."""
        assert self.stacks is not None
        ids = [id(m.loop.optimizer) for m in self.members]
        if self.optimizer is not None and ids == self.optimizer_sources:
            return
        if self.optimizer is not None and any(i in self.optimizer_sources for i in ids):
            raise FusionError("some members started a fresh optimiser and others did not")
        self.optimizer = FusedOptimizer([m.loop.optimizer for m in self.members], self.stacks)
        self.optimizer_sources = ids

    def each(self, action: Callable[[Member], None], full: bool = True) -> None:
        """``action`` for every member in its own turn; a member whose action raises fails alone."""
        failed = False
        for member in list(self.members):
            try:
                with member.turn(full):
                    action(member)
            except FusionError:
                raise
            except Exception as exc:
                run = make_run_row(member.cell, self.settings, member.loop, member.started, exc, traceback.format_exc())
                run["fused_cells"] = self.size
                member.result = CellResult(run=run, evals=member.loop.rows)
                self.members.remove(member)
                self.done.append(member)
                failed = True
        if failed and self.stacks is not None:
            self.regroup()

    # -- running

    def run(self) -> list[CellResult]:
        """Train every member to its end (fused while it can, alone after a FusionError); one result per cell."""
        started = time.perf_counter()
        walls = {id(m): (m.loop.clock.wall(), m.loop.clock.eval_seconds) for m in self.members}
        fused: list[Member] = list(self.members)
        if self.members:
            try:
                self._run_fused()
            except FusionError as error:
                self.note = str(error)
                fused = []
                self._go_on_alone()
        self._settle_clocks(fused, walls, time.perf_counter() - started)
        results = []
        for member in [*self.members, *self.done]:
            if member.result is None:
                loop = member.loop
                member.result = CellResult(
                    run=make_run_row(member.cell, self.settings, loop, member.started), evals=loop.rows
                )
                member.result.run["fused_cells"] = self.size
            results.append(member.result)
        return results

    def _start(self) -> Position | None:
        starts = {
            None if m.loop.start is None else (m.loop.start.segment, m.loop.start.steps_done) for m in self.members
        }
        if len(starts) > 1:
            raise FusionError("the members resume from checkpoints at different places")
        (start,) = starts
        return None if start is None else Position(*start)

    def _run_fused(self) -> None:
        start = self._start()
        loops = [m.loop for m in self.members]
        shapes = [[(s.index, s.steps) for s in m.segments] for m in self.members]
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise FusionError("the members' streams have different segments")
        if any(loop.method.runs_own_loop for loop in loops):
            raise FusionError("a method that runs its own loop cannot be fused")
        self.fuse()
        if start is None and not loops[0].rules.boundaries_in_training:
            self.exact = None
            self.each(lambda m: m.loop._restart_optimizer(m.loop.method.begin_segment(None, 0)))
            self.exact = Position(0, 0)
            self.sync_optimizer()
        first_segment = start.segment if start is not None else 0
        self.each(lambda m: m.loop.report(first_segment, force=True))
        count = len(shapes[0])
        for index in range(first_segment, count):
            steps_done = start.steps_done if start is not None and index == start.segment else None
            self._train_segment(index, steps_done, index == count - 1)
            if not self.members:
                return

    @staticmethod
    def _segment(member: Member, index: int) -> Segment:
        return member.segments[index]

    def _train_segment(self, index: int, steps_done: int | None, last: bool) -> None:
        assert self.stacks is not None
        visible: dict[int, int | None] = {}

        def begin(m: Member) -> None:
            visible[id(m)] = m.loop.begin_training(self._segment(m, index), steps_done)

        if steps_done is None:
            self.exact = None  # a begin_segment that ran for some members only
        self.each(begin)
        first = steps_done or 0
        self.exact = Position(index, first)
        if not self.members:
            return
        self.stacks.restack()
        self.sync_optimizer()
        steps = self._segment(self.members[0], index).steps
        for step in range(first, steps):
            self.exact = Position(index, step)
            self._step(index, step, steps, visible, verify=step == first)
            if not self.members:
                return
            if step + 1 < steps and self._checkpoint_due():
                self._checkpoint_all(Position(index, step + 1))
        self.exact = None
        self.each(lambda m: m.loop.end_training(self._segment(m, index), visible[id(m)]))
        self.each(lambda m: m.loop.evaluate_if_due(self._segment(m, index), last))
        if last or not self.members:
            return
        if self._checkpoint_due():
            self._checkpoint_all(Position(index + 1, None))
        else:
            self.each(lambda m: m.loop.save_if_due(self._segment(m, index), checkpoint=False))
        self.stacks.restack()
        self.sync_optimizer()

    def _checkpoint_due(self) -> bool:
        return any(m.loop.checkpoints is not None and m.loop.checkpoints.due() for m in self.members)

    def _checkpoint_all(self, position: Position) -> None:
        """Every member saves at the same place (a group resumes fused only from one place)."""
        assert self.optimizer is not None and self.stacks is not None
        self.optimizer.export_states()
        stacks, slots = self.stacks, {id(m): k for k, m in enumerate(self.members)}

        def save(m: Member) -> None:
            with stacks.own_storage(slots[id(m)]):
                m.loop.checkpoint(position)

        try:
            self.each(save)
        finally:
            if self.optimizer is not None:
                self.optimizer.clear_exported()

    def _step(self, index: int, step: int, steps: int, visible: dict[int, int | None], verify: bool) -> None:
        assert self.stacks is not None and self.optimizer is not None
        if not self.stacks.intact():
            raise FusionError("a method re-pointed or replaced a tensor of its module during a segment")
        members = list(self.members)
        segments = [self._segment(m, index) for m in members]
        snapshots = [pickle.dumps(m.loop.stream.sampling_state()) for m in members] if verify else []
        batches = [m.loop.draw_batch(segment) for m, segment in zip(members, segments, strict=True)]
        if not verify:
            self.exact = None  # the batches are drawn: only a verified step puts them back
        try:
            losses = self._losses(members, batches, visible, verify)
        except FusionError:
            for m, snapshot in zip(members, snapshots, strict=True):
                m.loop.stream.restore_sampling_state(pickle.loads(snapshot))
            raise
        self.exact = None
        torch.stack(losses).sum().backward()
        self._hand_out_gradients()
        optimizer = self.optimizer.optimizer
        members[0].loop.schedule(optimizer, step, steps)
        optimizer.step()
        slots = {id(m): k for k, m in enumerate(members)}

        def finish(m: Member) -> None:
            k = slots[id(m)]
            m.loop.finish_step(segments[k], losses[k], len(batches[k][0]))

        self.each(finish, full=False)
        self._zero_gradients()
        self.sync_optimizer()

    def _losses(
        self, members: list[Member], batches: list[tuple[Tensor, Tensor]], visible: dict[int, int | None], verify: bool
    ) -> list[Tensor]:
        """Every member's loss, its fused entry's output a slice of one vmapped forward pass of all of them."""
        assert self.stacks is not None
        stacks = self.stacks
        entries = [m.loop.method.fused_entry(visible[id(m)]) for m in members]
        if any(e is None for e in entries) or len({id(e) for e in entries}) != len(entries):
            raise FusionError("the members have no fused entry of their own")
        shared: dict[str, Any] = {}

        def compute(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
            params, buffers = stacks.entry_tensors(entries[0])
            xs = torch.stack([x for x, _ in batches])

            def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(entries[0], (p, b), (x, *args), kwargs)

            with _unpatched(entries[0]):
                try:
                    out = vmap(one, randomness="error")(params, buffers, xs)
                except FusionError:
                    raise
                except Exception as error:
                    raise FusionError(f"vmap of {type(entries[0]).__name__}: {_first_line(error)}") from None
            if not isinstance(out, Tensor):
                raise FusionError("the fused entry returns something other than one tensor")
            return out

        def intercept(k: int) -> Callable[..., Tensor]:
            def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
                if x is not batches[k][0]:
                    raise FusionError("the method runs its fused entry on something other than the training batch")
                if "out" not in shared:
                    shared["out"], shared["args"] = compute(args, kwargs), (args, kwargs)
                elif not _same_arguments(shared["args"], (args, kwargs)):
                    raise FusionError("the members call their fused entries with different arguments")
                return shared["out"][k]

            return forward

        losses = []
        for k, entry in enumerate(entries):
            entry.forward = intercept(k)
        try:
            for k, m in enumerate(members):
                with m.turn(full=False):
                    losses.append(m.loop.method.loss(batches[k][0], batches[k][1], visible[id(m)]))
        finally:
            for entry in entries:
                vars(entry).pop("forward", None)
        if verify and "out" in shared:  # after every loss: each member has set what its entry reads (a context)
            self._verify(entries, batches, shared["out"], *shared["args"])
        return losses

    @staticmethod
    def _verify(
        entries: list[nn.Module],
        batches: list[tuple[Tensor, Tensor]],
        fused: Tensor,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Each member's slice of the fused forward against its own forward pass (at the start of each segment)."""
        for k, entry in enumerate(entries):
            with torch.no_grad(), _unpatched(entry):
                own = entry(batches[k][0], *args, **kwargs)
            got = fused[k].detach()
            scale = float(own.abs().max()) if own.numel() else 0.0
            difference = float((got - own).abs().max()) if own.numel() else 0.0
            if not math.isfinite(difference) and math.isfinite(scale):
                difference = math.inf
            if difference > VERIFY_TOLERANCE * (1.0 + scale):
                raise FusionError(
                    f"member {k}'s fused forward differs from its own by {difference:.3g} (the method keeps state "
                    "outside its module's parameters and buffers, or its forward depends on a member's settings)"
                )

    def _hand_out_gradients(self) -> None:
        """Add what each loss computed outside the entry to the stacked gradient; every member's .grad a view."""
        assert self.stacks is not None
        for name, stacked in self.stacks.params.items():
            members = self.stacks.members[name]
            gradient = stacked.grad
            for k, t in enumerate(members):
                if t.grad is None:
                    continue
                if gradient is None:
                    gradient = stacked.grad = torch.zeros_like(stacked)
                gradient[k] += t.grad
            for k, t in enumerate(members):
                t.grad = None if gradient is None else gradient[k]

    def _zero_gradients(self) -> None:
        if self.stacks is None:
            return
        for name, stacked in self.stacks.params.items():
            stacked.grad = None
            for t in self.stacks.members[name]:
                t.grad = None

    def _go_on_alone(self) -> None:
        """After a FusionError: each member goes on by itself, exactly where it stands when that is known (at a
        segment's start, or a verified step whose batches went back), else from its last checkpoint or afresh."""
        self.unfuse()
        exact = self.exact
        for member in list(self.members):
            restore_random_states(member.random)
            if exact is None:
                member.result = run_cell(member.cell, self.settings)
            else:
                if exact is not START:
                    member.loop.start = exact
                member.result = _run_loop(member, self.settings)
            self.members.remove(member)
            self.done.append(member)

    def _settle_clocks(self, fused: list[Member], walls: dict[int, tuple[float, float]], elapsed: float) -> None:
        """A fused member's wall time: its own setup and evaluations, and its share of the group's steps."""
        alive = [m for m in fused if m.result is None]
        if not fused:
            return
        evaluations = sum(m.loop.clock.eval_seconds - walls[id(m)][1] for m in fused)
        share = max(0.0, elapsed - evaluations) / len(fused)
        for member in alive:
            wall, eval_before = walls[id(member)]
            clock = member.loop.clock
            clock.settle(wall + (clock.eval_seconds - eval_before) + share)


def _run_loop(member: Member, settings: WorkerSettings) -> CellResult:
    """The member's loop, alone, from its ``start`` (a place it stood when its group stopped being fused)."""
    loop = member.loop
    try:
        loop.run()
    except Exception as exc:
        run = make_run_row(member.cell, settings, loop, member.started, exc, traceback.format_exc())
        return CellResult(run=run, evals=loop.rows)
    return CellResult(run=make_run_row(member.cell, settings, loop, member.started), evals=loop.rows)


@contextmanager
def _unpatched(entry: nn.Module) -> Iterator[None]:
    patch = vars(entry).pop("forward", None)
    try:
        yield
    finally:
        if patch is not None:
            entry.forward = patch


def _same_arguments(a: tuple[tuple[Any, ...], dict[str, Any]], b: tuple[tuple[Any, ...], dict[str, Any]]) -> bool:
    (args_a, kwargs_a), (args_b, kwargs_b) = a, b
    if len(args_a) != len(args_b) or set(kwargs_a) != set(kwargs_b):
        return False
    pairs = [*zip(args_a, args_b, strict=True), *((kwargs_a[k], kwargs_b[k]) for k in kwargs_a)]
    return all(x is y if isinstance(x, Tensor) or isinstance(y, Tensor) else x == y for x, y in pairs)


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


def run_group(cells: Sequence[Cell], settings: WorkerSettings) -> list[CellResult]:
    """Train a group of cells, fused when there are several; one result per cell, in any order."""
    if len(cells) == 1:
        result = run_cell(cells[0], settings)
        result.run["fused_cells"] = 1
        return [result]
    return FusedGroup(cells, settings).run()
