"""BatchEnsemble: what trains when, what it stores, and both ways of inferring the task."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic_runs import run_synthetic

from harness.backbones import BackboneSpec, backbone_factory
from methods.base import BuildContext, LabelSpace
from methods.batche import BatchE, BatchEConfig
from results.metrics import accuracy_matrix


def build(scenario: str, **settings: object) -> BatchE:
    method = BatchE(BatchEConfig(**settings))  # type: ignore[arg-type]
    shared = scenario != "GNu"
    factory = backbone_factory(BackboneSpec("fc", (16,)), (1, 4, 4))
    method.build(BuildContext(scenario, LabelSpace(3, 2, shared), factory, (1, 4, 4), torch.device("cpu"), 0))
    return method


def test_shared_weights_train_on_the_first_task_only_and_each_task_on_its_own_factors() -> None:
    method = build("GG")
    groups = method.begin_segment(0, 0)
    assert [g.get("lr") for g in groups] == [1e-2, None]
    assert all(layer.weight.requires_grad for layer in method.layers)
    groups = method.begin_segment(1, 100)
    assert not any(layer.weight.requires_grad for layer in method.layers)
    trained = {id(p) for g in groups for p in g["params"]}
    assert trained.isdisjoint(id(layer.weight) for layer in method.layers)
    assert trained.issuperset(id(p) for p in method.heads[1].parameters())
    assert trained.isdisjoint(id(p) for p in method.heads[0].parameters())
    method.loss(torch.randn(5, 1, 4, 4), torch.randint(0, 2, (5,)), 1).backward()
    first = method.layers[0]
    assert first.weight.grad is None and first.r.grad[0].abs().sum() == 0 and first.r.grad[1].abs().sum() > 0


def test_the_authors_settings_kaiming_normal_weights_first_factors_with_w_and_a_rank_one_last_layer() -> None:
    torch.manual_seed(0)
    method = build("GG", weight_init="kaiming_normal", first_task_factor_lr="weights", gg_head="factors")
    wide = BatchE(BatchEConfig(weight_init="kaiming_normal"))
    factory = backbone_factory(BackboneSpec("fc", (1024,)), (1, 32, 32))
    wide.build(BuildContext("GG", LabelSpace(2, 10, True), factory, (1, 32, 32), torch.device("cpu"), 0))
    assert wide.layers[0].weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.02)  # fan_in, relu gain
    assert len(method.heads) == 0 and method.last is method.layers[-1]  # each task's factors on the last layer too
    first = method.begin_segment(0, 0)
    assert [g.get("lr") for g in first] == [None]  # factors and W together at the run's (weights') rate
    trained = {id(p) for g in first for p in g["params"]}
    assert trained >= {id(p) for layer in method.layers for p in (layer.weight, layer.r, layer.s)}
    later = method.begin_segment(1, 100)
    assert [g.get("lr") for g in later] == [1e-2]
    x = torch.randn(5, 1, 4, 4)
    assert method.predict(x, 1).logits.shape == (5, 2)


def test_storage_counts_shared_weights_and_the_factors_and_heads_of_seen_tasks() -> None:
    method = build("GG")
    method.begin_segment(0, 0)
    method.begin_segment(1, 100)
    parts = method.storage()
    assert parts["weights"] == 4 * 16 * 16
    assert parts["factors"] == 2 * 4 * (16 + 16)
    assert parts["heads"] == 2 * 4 * (16 * 2 + 2)


@pytest.mark.parametrize(
    ("scenario", "settings"),
    [
        ("GNu", {"inference": "lowest"}),
        ("GNs", {"inference": "lowest", "output_size": 8}),
        ("GG", {"random_weights": True, "factor_init": "ones"}),
        ("GG", {"weight_init": "kaiming_normal", "first_task_factor_lr": "weights", "gg_head": "factors"}),  # authors'
    ],
)
def test_batche_variants_learn(scenario: str, settings: dict) -> None:
    _, evals = run_synthetic("batche", scenario, settings)
    assert accuracy_matrix(evals)[-1].mean() > 0.8
    if scenario != "GG":
        inferred = evals[(evals["metric"] == "task_inference_accuracy") & (evals["segment"] == 2)]["value"]
        assert inferred.min() > 0.9


def test_rank_one_convolution_matches_a_convolution_written_out_by_hand() -> None:
    from methods.batche import RankOneConv2d, Selection

    torch.manual_seed(0)
    weight = torch.randn(2, 3, 2, 2)
    selection = Selection()
    layer = RankOneConv2d(weight.clone(), 2, selection, torch.Generator().manual_seed(1), stride=1, padding=0)
    selection.task = 1
    r, s = layer.r[1].detach(), layer.s[1].detach()
    x = torch.randn(1, 3, 3, 4)
    expected = torch.zeros(1, 2, 2, 3)
    for o in range(2):
        for i in range(2):
            for j in range(3):
                kernel = weight[o] * r[o] * s[:, None, None]  # W * r s^T on the kernel
                expected[0, o, i, j] = (x[0, :, i : i + 2, j : j + 2] * kernel).sum()
    assert torch.allclose(layer(x), expected, atol=1e-5)
    selection.alpha = torch.tensor([0.0, 1.0])  # a superposition that selects task 1 gives the same
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_weight_decay_is_the_authors_adam_decay_on_what_the_task_trains_and_spares_finished_tasks() -> None:
    """Theirs keeps each task's factors in a parameter of its own, so Adam's decay reaches only the current task's."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 4, 4), torch.randint(0, 2, (6,))
    decayed = build("GNu", weight_decay=0.5, first_task_factor_lr="weights")
    for task in (0, 1):
        optimizer = torch.optim.Adam(decayed.begin_segment(task, 0), lr=1e-2)
        before = [[t.detach().clone() for t in (layer.weight, layer.r, layer.s)] for layer in decayed.layers]
        for _ in range(3):
            optimizer.zero_grad()
            decayed.loss(x, y, task).backward()
            optimizer.step()

    def task_1_as_its_own_parameters(weight_decay: float) -> list[torch.Tensor]:
        reference = build("GNu", first_task_factor_lr="weights")
        for layer, tensors in zip(reference.layers, before, strict=True):
            for t, saved in zip((layer.weight, layer.r, layer.s), tensors, strict=True):
                t.data.copy_(saved)
        reference.begin_segment(0, 0)
        reference.begin_segment(1, 0)
        shared = [p for layer in reference.layers for p in (layer.r, layer.s)]
        rows = [torch.nn.Parameter(p[1].detach().clone()) for p in shared]
        optimizer = torch.optim.Adam(rows, lr=1e-2, weight_decay=weight_decay)  # torch's coupled decay
        for _ in range(3):
            for p, row in zip(shared, rows, strict=True):
                p.data[1], p.grad = row.data, None
            reference.loss(x, y, 1).backward()
            for p, row in zip(shared, rows, strict=True):
                row.grad = p.grad[1].clone()
            optimizer.step()
        return rows

    ours = [p[1] for layer in decayed.layers for p in (layer.r, layer.s)]
    theirs, undecayed = task_1_as_its_own_parameters(0.5), task_1_as_its_own_parameters(0.0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs, strict=True))
    assert max((a - b).abs().max().item() for a, b in zip(ours, undecayed, strict=True)) > 1e-3
    assert all(torch.equal(layer.r[0], saved[1][0]) for layer, saved in zip(decayed.layers, before, strict=True))
    # on the first task the decay reaches W as well
    decayed.begin_segment(0, 0)
    weight = decayed.layers[0].weight
    with_decay = torch.autograd.grad(decayed.loss(x, y, 0), weight)[0]
    decayed.config = dataclasses.replace(decayed.config, weight_decay=0.0)
    without = torch.autograd.grad(decayed.loss(x, y, 0), weight)[0]
    assert torch.allclose(with_decay - without, 0.5 * weight, atol=1e-6)


def trained_loop(scenario: str, settings: dict, backbone: dict | None = None):  # noqa: ANN201
    from harness.grid import make_cell
    from harness.runner import Loop, WorkerSettings

    cell = make_cell(
        "batche",
        "synthetic",
        scenario,
        method_settings={"output_size": 8, **settings},
        stream_settings={"num_tasks": 5, "steps_per_task": 40, "test_per_task": 96},
        backbone=backbone or {"name": "fc", "hidden": [32, 32]},
        training={"lr": 0.01, "batch_size": 32, "probe_every": 0, "eval_batch_size": 8},
    )
    loop = Loop(cell, WorkerSettings(None, "cpu", 1))
    loop.run()
    return loop


BATCHED_CASES = [
    ("GNu", {"inference_images": 1}),
    ("GNu", {"inference_images": 2}),
    ("GNs", {"weight_init": "kaiming_normal", "first_task_factor_lr": "weights", "inference_images": 1}),
    ("GNu", {"inference": "lowest"}),
    ("GNu", {"inference": "lowest", "inference_images": 1}),
    ("GNu", {"inference": "lowest", "inference_images": 1, "objective": "superfluous"}),
]


@pytest.mark.parametrize(("scenario", "settings"), BATCHED_CASES, ids=[f"{s}-{c}" for s, c in BATCHED_CASES])
def test_inference_over_many_test_batches_infers_what_it_infers_batch_by_batch(scenario: str, settings: dict) -> None:
    loop = trained_loop(scenario, settings)
    method = loop.method
    assert method._batches_inference(8) and len(method.seen) == 5
    batches = [x for task in range(5) for x, _ in loop.stream.test_batches(task, 8)]
    one_by_one = [method.predict(x, None) for x in batches]
    together = list(method.predict_many(batches, None))
    for alone, batched in zip(one_by_one, together, strict=True):
        assert torch.equal(alone.task, batched.task)
        torch.testing.assert_close(alone.logits, batched.logits)
    inferred = {int(p.task[0]) for p in one_by_one}
    assert len(inferred) > 1  # the batches are not all given one task, so equality says something


@pytest.mark.parametrize("objective", ["entropy", "superfluous"])
def test_batched_alpha_gradients_are_the_per_batch_ones(objective: str) -> None:
    from methods.task_inference import alpha_gradient

    loop = trained_loop("GNu", {"objective": objective})
    method = loop.method
    x, _ = next(loop.stream.test_batches(2, 8))
    together = method._alpha_gradients(x)
    order = torch.tensor(method.seen)
    for example in range(len(x)):

        def forward(alpha: torch.Tensor, rows: torch.Tensor | None, image: torch.Tensor = x[example : example + 1]):
            method.selection.alpha = torch.zeros(int(order.max()) + 1).index_add(0, order, alpha)
            try:
                return method.last(method.trunk(image))
            finally:
                method.selection.alpha = None

        with torch.enable_grad():
            alone = -alpha_gradient(forward, None, len(order), method._objective, torch.device("cpu"))
        torch.testing.assert_close(together[:, example], alone, rtol=1e-4, atol=1e-6)


def test_one_shot_batches_across_test_batches_only_from_few_images_and_without_batch_norm() -> None:
    assert build("GNu", inference_images=1)._batches_inference(128)
    assert not build("GNu")._batches_inference(128)  # the whole batch: cheaper batch by batch
    assert build("GNu", inference="lowest")._batches_inference(128)
    method = build("GNu", inference_images=1)
    method.norms.append(object())  # type: ignore[arg-type]
    assert not method._batches_inference(128)
