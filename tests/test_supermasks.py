"""SupSup's parts on cases with known answers: masks and their gradients, packed storage, task inference, Hopfield."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_runs import run_ok, run_synthetic

import methods.supermask as supermask
from harness.grid import make_cell
from methods.hopsupsup import hopfield_energy, hopfield_write
from methods.supermask import MaskBank, Superimpose, ThresholdMask, TopFractionMask, pack_bits, unpack_bits
from methods.task_inference import binary, entropy, is_uncertain, one_shot, superfluous_objective
from results.metrics import accuracy_matrix
from results.schema import DIAGNOSTIC_PREFIX


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000])
def test_packed_bits_round_trip(numel: int) -> None:
    mask = torch.rand(numel) < 0.3
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel / 8)
    assert torch.equal(unpack_bits(packed, numel, torch.bool), mask)


def test_threshold_mask_passes_the_gradient_straight_through() -> None:
    scores = torch.tensor([-0.5, 0.0, 0.2, -1e-6], requires_grad=True)
    mask = ThresholdMask.apply(scores)
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0]
    upstream = torch.tensor([1.0, -2.0, 3.0, -4.0])
    (mask * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream)


def test_top_fraction_mask_keeps_the_largest_magnitudes_and_its_gradient_carries_their_sign() -> None:
    scores = torch.tensor([0.1, -0.9, 0.5, -0.2, 0.7, 0.05], requires_grad=True)
    mask = TopFractionMask.apply(scores.abs(), 0.5)
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    mask.sum().backward()
    assert torch.equal(scores.grad, torch.sign(scores.detach()))


@pytest.mark.parametrize("rows", [None, [4, 0, 2]])
def test_superposed_masks_and_their_alpha_gradient_match_a_dense_stack(monkeypatch, rows) -> None:  # noqa: ANN001
    monkeypatch.setattr(supermask, "CHUNK_ELEMENTS", 24)  # several chunks of two masks each
    torch.manual_seed(0)
    weight = torch.randn(3, 4)
    masks = torch.rand(5, 3, 4) < 0.5
    bank = MaskBank((3, 4), torch.device("cpu"))
    for mask in masks:
        bank.append(mask)
    chosen = torch.arange(5) if rows is None else torch.tensor(rows)
    alpha = torch.rand(len(chosen), requires_grad=True)
    upstream = torch.randn(3, 4)
    uniform = False
    packed = Superimpose.apply(alpha, weight, bank, None if rows is None else chosen, uniform)
    (packed * upstream).sum().backward()
    dense_alpha = alpha.detach().clone().requires_grad_(True)
    dense = weight * (dense_alpha[:, None, None] * masks[chosen].float()).sum(0)
    (dense * upstream).sum().backward()
    assert torch.allclose(packed, dense, atol=1e-6)
    assert torch.allclose(alpha.grad, dense_alpha.grad, atol=1e-5)


BILINEAR_PATHS = {  # (threshold for going unit by unit, which side has zeros): the path each pair takes
    "dense": (0.0, "deltas"),
    "by-delta-unit": (1.0, "deltas"),
    "by-input-unit": (1.0, "inputs"),
}


@pytest.mark.parametrize("shape", [(3, 4), (6, 5)])  # in = 5: a unit's mask row does not start on a byte
@pytest.mark.parametrize("path", list(BILINEAR_PATHS))
@pytest.mark.parametrize("rows", [None, [4, 0, 2]])
def test_bilinear_projection_is_each_examples_weight_gradient_on_each_mask(monkeypatch, rows, path, shape) -> None:  # noqa: ANN001
    monkeypatch.setattr(supermask, "CHUNK_ELEMENTS", 24)  # chunks of a few masks or units, examples in slices
    threshold, sparse_side = BILINEAR_PATHS[path]
    monkeypatch.setattr(supermask, "SPARSE_BELOW", threshold)
    calls = []
    original = MaskBank._by_unit
    monkeypatch.setattr(MaskBank, "_by_unit", lambda bank, *a: calls.append(bank.shape) or original(bank, *a))
    torch.manual_seed(1)
    weight, inputs, deltas = torch.randn(*shape), torch.randn(9, shape[1]), torch.randn(9, shape[0])
    sparse = deltas if sparse_side == "deltas" else inputs
    sparse[torch.rand(sparse.shape) < 0.6] = 0  # as behind a ReLU; some units have no active example at all
    sparse[:, 1] = 0
    masks = torch.rand(5, *shape) < 0.5
    bank = MaskBank(shape, torch.device("cpu"))
    for mask in masks:
        bank.append(mask)
    if path == "by-input-unit":  # the transposed copy must follow a slot rewritten after it was built
        bank.bilinear(weight, inputs, deltas)
        masks[2] = ~masks[2]
        bank.replace(2, masks[2])
    chosen = torch.arange(5) if rows is None else torch.tensor(rows)
    got = bank.bilinear(weight, inputs, deltas, None if rows is None else chosen)
    per_example = deltas[:, :, None] * inputs[:, None, :] * weight  # d (delta . W x) / d W, example by example
    expected = torch.einsum("noi,koi->kn", per_example, masks[chosen].float())
    assert got.shape == (len(chosen), len(inputs))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    transposed = (shape[1], shape[0])
    assert calls[-1:] == {"dense": [], "by-delta-unit": [shape], "by-input-unit": [transposed]}[path]


def test_mask_bank_checkpoints_without_its_transposed_cache() -> None:
    bank = MaskBank((3, 4), torch.device("cpu"))
    bank.append(torch.rand(3, 4) < 0.5)
    bank.transposed()
    restored = pickle.loads(pickle.dumps(bank))
    assert restored._transposed is None
    assert torch.equal(restored.transposed().mask(0), bank.mask(0).T)


def test_uniform_superposition_uses_the_kept_counts() -> None:
    bank = MaskBank((2, 3), torch.device("cpu"))
    masks = torch.rand(4, 2, 3) < 0.5
    for mask in masks:
        bank.append(mask)
    bank.replace(1, ~masks[1])
    masks[1] = ~masks[1]
    alpha = torch.full((4,), 0.25)
    fast = Superimpose.apply(alpha, torch.ones(2, 3), bank, None, True)
    assert torch.allclose(fast, masks.float().mean(0))
    assert torch.allclose(bank.mix(alpha).view(2, 3), masks.float().mean(0))


def candidates_forward(logits_per_candidate: torch.Tensor):  # noqa: ANN201
    """A superposition whose output is linear in alpha: candidate i alone gives ``logits_per_candidate[i]``."""

    def forward(alpha: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        table = logits_per_candidate if rows is None else logits_per_candidate[rows]
        return (alpha[:, None, None] * table).sum(0)

    return forward


@pytest.mark.parametrize("count", [2, 7, 8, 33])
def test_one_shot_and_binary_find_the_only_confident_candidate(count: int) -> None:
    torch.manual_seed(count)
    right = count // 2 + 1 if count > 2 else 1
    table = torch.randn(count, 4, 10) * 0.1  # every candidate unsure...
    table[right, :, 3] += 8.0  # ...but one, confident about class 3
    forward = candidates_forward(table)
    index, score = one_shot(forward, count, entropy, torch.device("cpu"))
    assert index == right
    assert binary(forward, count, entropy, torch.device("cpu")) == right
    assert not is_uncertain(score, count, 0.125)


def test_one_shot_with_g_finds_the_candidate_that_pushes_the_superfluous_neurons_down() -> None:
    count, classes = 6, 10
    table = torch.zeros(count, 1, 100)
    table[:, :, classes:] = 2.0
    table[4, :, classes:] = -6.0  # the mask trained on this data keeps its s-neurons low
    objective = lambda logits: superfluous_objective(logits, classes)  # noqa: E731
    assert one_shot(candidates_forward(table), count, objective, torch.device("cpu"))[0] == 4


def test_g_sends_gradient_only_to_the_superfluous_neurons() -> None:
    logits = torch.randn(5, 30, requires_grad=True)
    superfluous_objective(logits, 10).backward()
    assert torch.all(logits.grad[:, :10] == 0)
    assert torch.all(logits.grad[:, 10:] > 0)
    with pytest.raises(ValueError, match="more outputs"):
        superfluous_objective(torch.randn(2, 10), 10)


def test_a_flat_gradient_is_uncertain() -> None:
    assert is_uncertain(torch.zeros(5), 5, 0.125)
    assert not is_uncertain(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]), 5, 0.125)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_hopfield_network_recalls_the_patterns_it_stored(rule: str) -> None:
    generator = torch.Generator().manual_seed(1)
    d = 256
    patterns = [torch.randint(0, 2, (d,), generator=generator).float() * 2 - 1 for _ in range(4)]
    psi = torch.zeros(d, d)
    for z in patterns:
        hopfield_write(psi, z, rule)  # type: ignore[arg-type]
    for z in patterns:
        noisy = torch.where(torch.rand(d, generator=generator) < 0.15, -z, z)
        assert hopfield_energy(psi, z) < hopfield_energy(psi, noisy)
        state = noisy
        for _ in range(10):
            state = torch.where(psi @ state >= 0, 1.0, -1.0)
        assert torch.equal(state, z)


def run_mnist(method: str, scenario: str, data_dir: Path, settings: dict, tasks: int, steps: int) -> pd.DataFrame:
    cell = make_cell(
        method,
        "permuted_mnist",
        scenario,
        method_settings=settings,
        stream_settings={"num_tasks": tasks, "steps_per_task": steps},
        backbone="lenet_300_100",
        training={"probe_every": 0, "eval_samples": 1000},
    )
    return run_ok(cell, data_dir, threads=2)[1]


def test_supsup_infers_permuted_mnist_tasks_from_one_image(data_dir: Path) -> None:
    settings = {"output_size": 100, "objective": "superfluous", "inference_images": 1}
    evals = run_mnist("supsup", "GNu", data_dir, settings, tasks=3, steps=300)
    final = evals[evals["segment"] == 2]
    inference = final[final["metric"] == "task_inference_accuracy"]["value"]
    assert len(inference) == 3 and inference.min() > 0.95
    assert accuracy_matrix(evals)[-1].min() > 0.85


def test_supsup_allocates_one_mask_per_task_without_task_information(data_dir: Path) -> None:
    evals = run_mnist("supsup", "NNs", data_dir, {"output_size": 500}, tasks=3, steps=300)  # sec. 4.3's s
    masks = evals[evals["metric"] == DIAGNOSTIC_PREFIX + "masks"]["value"].tolist()
    assert masks == [1, 2, 3] or masks == [1, 2, 4], masks  # a stray mask at most
    assert accuracy_matrix(evals)[-1].min() > 0.85


@pytest.mark.parametrize(
    ("scenario", "settings"),
    [
        ("GG", {"transfer": True, "keep_fraction": 0.3}),
        ("GNu", {"inference": "binary", "inference_images": 0, "mask": "top_fraction"}),
        ("GNs", {"output_size": 20, "objective": "superfluous", "storage_format": "csc16"}),
    ],
)
def test_supsup_variants_learn_and_count_their_bytes(scenario: str, settings: dict) -> None:
    run, evals = run_synthetic("supsup", scenario, settings)
    assert accuracy_matrix(evals)[-1].mean() > 0.8
    last = evals[evals["segment"] == 2].set_index("metric")["value"]
    last.index = last.index.str.removeprefix(DIAGNOSTIC_PREFIX)  # the method's diagnostics, by their own names
    assert last["masks"] == 3
    inputs, outputs = 8 * 8, settings.get("output_size") or 2  # synthetic: 8x8 inputs, 2 classes per task
    assert last["mask_bytes_packed"] == 3 * (math.ceil(inputs * 32 / 8) + math.ceil(32 * outputs / 8))
    expected = last["mask_bytes_csc16"] if settings.get("storage_format") == "csc16" else last["mask_bytes_packed"]
    assert run["storage_bytes"] == expected + 8  # the masks and the seed of the weights


def test_csc16_bytes_match_scipy() -> None:
    import numpy as np
    import scipy.sparse

    mask = torch.rand(40, 30) < 0.2
    matrix = scipy.sparse.csc_matrix(mask.numpy())
    assert supermask.csc16_bytes(mask) == 2 * matrix.nnz + 4 * (30 + 1)
    assert matrix.indices.max() < np.iinfo(np.int16).max


@pytest.mark.parametrize("mirror_bias", [True, False])
def test_mirror_bias_makes_a_stored_mask_lower_in_energy_than_its_complement(mirror_bias: bool) -> None:
    from harness.backbones import BackboneSpec, backbone_factory
    from methods.base import BuildContext, LabelSpace
    from methods.hopsupsup import HopSupSup, HopSupSupConfig

    method = HopSupSup(HopSupSupConfig(mirror_bias=mirror_bias))
    factory = backbone_factory(BackboneSpec("fc", (24, 16)), (1, 4, 4))
    method.build(BuildContext("GNu", LabelSpace(2, 2, False), factory, (1, 4, 4), torch.device("cpu"), 0))
    method.begin_segment(0, 0)
    with torch.no_grad():
        for units in method.units:
            units.scores.copy_(torch.randn(len(units.scores)))
    method.end_segment(0, None)
    stored = [(units.scores >= 0).float() * 2 - 1 for units in method.units]
    mirrored = [-z for z in stored]
    if mirror_bias:
        assert method.energy(stored) < method.energy(mirrored)
    else:
        assert torch.isclose(method.energy(stored), method.energy(mirrored))


def test_carried_recovery_steps_once_per_chunk_and_classifies_every_example() -> None:
    from harness.backbones import BackboneSpec, backbone_factory
    from methods.base import BuildContext, LabelSpace
    from methods.hopsupsup import HopSupSup, HopSupSupConfig

    method = HopSupSup(HopSupSupConfig(recovery="carried", recovery_batch_size=4))
    factory = backbone_factory(BackboneSpec("fc", (12, 8)), (1, 4, 4))
    method.build(BuildContext("GNu", LabelSpace(2, 2, False), factory, (1, 4, 4), torch.device("cpu"), 0))
    for task in range(2):
        method.begin_segment(task, 0)
        with torch.no_grad():
            for units in method.units:
                units.scores.copy_(torch.randn(len(units.scores)))
        method.end_segment(task, None)
    chunks = method.chunks(13, torch.device("cpu"))
    assert [len(c) for c in chunks] == [4, 4, 5]  # a lone last example joins the batch before it
    assert torch.equal(torch.cat(chunks).sort().values, torch.arange(13))
    steps = []
    original = method._recovery_step
    method._recovery_step = lambda x, scores, optimizer, progress: (  # type: ignore[method-assign]
        steps.append((len(x), progress)),
        original(x, scores, optimizer, progress),
    )
    x = torch.randn(13, 1, 4, 4)
    logits = method.predict(x, None).logits
    assert steps == [(4, 1 / 3), (4, 2 / 3), (5, 1.0)]
    assert logits.shape == (13, 4) and torch.isfinite(logits).all()
    assert torch.equal(method.predict(x, None).logits, logits)  # the same order and recovery every time


def test_masked_convolution_matches_a_convolution_written_out_by_hand() -> None:
    from methods.supsup import MaskedConv2d, MaskState

    torch.manual_seed(0)
    weight = torch.randn(2, 3, 2, 2)
    layer = MaskedConv2d(weight, MaskState(), None, torch.device("cpu"), stride=1, padding=0)
    with torch.no_grad():
        layer.scores.copy_(torch.randn(2, 3, 2, 2))
    x = torch.randn(1, 3, 3, 4)
    mask = (layer.scores >= 0).float()
    expected = torch.zeros(1, 2, 2, 3)
    for o in range(2):
        for i in range(2):
            for j in range(3):
                expected[0, o, i, j] = (x[0, :, i : i + 2, j : j + 2] * weight[o] * mask[o]).sum()
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_erdos_renyi_keeps_the_asked_fraction_overall_and_small_layers_denser() -> None:
    shapes = [(64, 3, 7, 7), (256, 64, 1, 1), (512, 512, 3, 3), (10, 2048)]
    densities = supermask.erdos_renyi_densities(shapes, 0.05)
    sizes = [int(np.prod(s)) for s in shapes]
    assert sum(d * n for d, n in zip(densities, sizes, strict=True)) == pytest.approx(0.05 * sum(sizes))
    raw = [sum(s) / n for s, n in zip(shapes, sizes, strict=True)]
    sparse = [i for i, d in enumerate(densities) if d < 1]
    assert max(densities) <= 1.0 and len(sparse) >= 2 and densities[2] < 0.05  # the big 3x3 layer is sparsest
    assert np.allclose([densities[i] / raw[i] for i in sparse], densities[sparse[0]] / raw[sparse[0]])
    assert all(raw[i] > max(raw[j] for j in sparse) for i, d in enumerate(densities) if d == 1.0)
    filled = supermask.erdos_renyi_densities([(4, 3), (1000, 1000)], 0.5)
    assert filled[0] == 1.0 and filled[1] == pytest.approx((0.5 * 1_000_012 - 12) / 1_000_000)
    assert supermask.erdos_renyi_densities([(30, 20), (30, 20)], 0.2) == pytest.approx([0.2, 0.2])


def test_supsup_with_the_erdos_renyi_budget_keeps_the_fraction_overall_not_per_layer() -> None:
    from harness.backbones import BackboneSpec, backbone_factory
    from methods.base import BuildContext, LabelSpace
    from methods.supsup import SupSup, SupSupConfig

    method = SupSup(SupSupConfig(keep_fraction=0.1, budget="erdos_renyi"))
    factory = backbone_factory(BackboneSpec("resnet18", width=4), (3, 16, 16))
    method.build(BuildContext("GG", LabelSpace(2, 5, True), factory, (3, 16, 16), torch.device("cpu"), 0))
    kept = [layer.top_keep for layer in method.layers]
    sizes = [layer.weight.numel() for layer in method.layers]
    assert len(set(kept)) > 3 and max(kept) > 0.1 > min(kept)
    assert sum(k * n for k, n in zip(kept, sizes, strict=True)) == pytest.approx(0.1 * sum(sizes))
    method.begin_segment(0, 0)
    masks = [layer.current_mask() for layer in method.layers]
    assert sum(int(m.sum()) for m in masks) == pytest.approx(0.1 * sum(sizes), rel=0.02)


def trained_loop(scenario: str, settings: dict, tasks: int = 6):  # noqa: ANN201
    from harness.runner import Loop, WorkerSettings

    cell = make_cell(
        "supsup",
        "synthetic",
        scenario,
        method_settings=settings,
        stream_settings={"num_tasks": tasks, "steps_per_task": 30, "test_per_task": 96},
        backbone={"name": "fc", "hidden": [32, 32]},
        training={"lr": 0.1, "batch_size": 32, "probe_every": 0, "eval_batch_size": 8},
    )
    loop = Loop(cell, WorkerSettings(None, "cpu", 1))
    loop.run()
    return loop


BATCHED_CASES = [
    ("GNu", {"output_size": 10}),
    ("GNu", {"output_size": 10, "objective": "superfluous"}),
    ("GNu", {"inference_images": 3}),
    ("GNs", {}),
    ("NNs", {}),
    ("GNu", {"output_size": 10, "inference": "binary"}),
    ("GNu", {"output_size": 10, "objective": "superfluous", "inference": "binary"}),
    ("GNu", {"inference_images": 3, "inference": "binary"}),
    ("GNs", {"inference": "binary"}),
    ("NNs", {"inference": "binary"}),
]


@pytest.mark.parametrize(("scenario", "settings"), BATCHED_CASES, ids=[f"{s}-{c}" for s, c in BATCHED_CASES])
def test_inference_over_many_test_batches_infers_what_it_infers_batch_by_batch(scenario: str, settings: dict) -> None:
    loop = trained_loop(scenario, settings)
    method = loop.method
    if scenario == "NNs":  # these tasks are too alike for it to allocate: take up three of its reserved masks
        method.allocated = 3
        assert method.layers[0].bank.count > 3  # so only some of the bank's rows are candidates
    assert method._batches_inference(8) and method.allocated > 2
    inferred = wrong = 0
    for task in range(loop.stream.num_tasks):
        batches = [x for x, _ in loop.stream.test_batches(task, 8)]
        one_by_one = [method.predict(x, None) for x in batches]
        together = list(method.predict_many(batches, None))
        for alone, batched in zip(one_by_one, together, strict=True):
            assert torch.equal(alone.logits, batched.logits)  # the same mask chose, so the same logits
            if alone.task is not None:
                assert torch.equal(alone.task, batched.task)
                inferred += 1
                wrong += int((alone.task != task).any())
    assert scenario == "NNs" or inferred == 6 * 12
    assert scenario == "NNs" or wrong < inferred  # inference works at all here, so equality says something


def test_batched_alpha_gradients_are_the_per_batch_ones() -> None:
    loop = trained_loop("GNu", {"output_size": 10})
    method = loop.method
    x, _ = next(loop.stream.test_batches(2, 8))
    count = method.allocated
    together = method._alpha_gradients(x, count, None)
    for example in range(len(x)):
        forward = method._superposed(x[example : example + 1])
        _, score = one_shot(forward, count, method._objective, method.device)
        torch.testing.assert_close(-together[:, example], score, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kept_bytes", [1, 1 << 28], ids=["a-batch-a-group", "one-group"])
def test_binary_rounds_superpose_the_first_layers_kept_outputs_and_infer_what_batch_by_batch_infers(
    monkeypatch, kept_bytes: int
) -> None:  # noqa: ANN001
    """Binary's later rounds reuse each candidate's first-layer outputs (``CandidateOutputs``) instead of applying
    the first layer's masks again, in groups of batches sized by the bytes those outputs may take."""
    import methods.supsup as supsup_module
    from methods.supermask import MaskBank

    loop = trained_loop("GNu", {"output_size": 10, "inference": "binary", "inference_images": 2}, tasks=9)
    method = loop.method
    monkeypatch.setattr(supsup_module, "CANDIDATE_OUTPUT_BYTES", kept_bytes)
    first_shape = method.layers[0].bank.shape
    mixed_shapes: list[tuple[int, ...]] = []
    mixed_forward = MaskBank.mixed_forward

    def spy(bank: MaskBank, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        mixed_shapes.append(bank.shape)
        return mixed_forward(bank, *args, **kwargs)

    monkeypatch.setattr(MaskBank, "mixed_forward", spy)
    batches = [x for task in range(9) for x, _ in loop.stream.test_batches(task, 8)]
    alone = [int(method.predict(x, None).task[0]) for x in batches]
    assert not mixed_shapes  # batch by batch never mixes
    assert method.infer_slots(batches) == [method.task_slot[t] for t in alone]
    assert mixed_shapes and first_shape not in mixed_shapes  # later rounds ran, never over the first layer's masks
    assert method.layers[0].candidate_outputs is None  # dropped after each group
