"""Parameter Superposition: contexts, retrieval noise (Appendix A), Table 1's storage, gradients of complex layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.backbones import BackboneSpec, backbone_factory
from harness.grid import make_cell
from harness.runner import WorkerSettings, run_cell
from methods import METHODS
from methods.base import BuildContext, LabelSpace
from methods.psp import BinaryBank, OnePowerBank, PhaseBank, PSPFast, PSPFastConfig, PSPLinear, RotationBank, SplitReLU

M = 256


def test_complex_contexts_are_orthogonal_in_expectation() -> None:
    bank = PhaseBank(M, count=40, seed=0, learn=False)
    c = torch.polar(torch.ones(40, M), bank.phases)
    gram = (c @ c.conj().T) / M  # E[c_i conj(c_j)] estimated over the M elements
    off = gram[~torch.eye(40, dtype=torch.bool)]
    assert torch.allclose(gram.diagonal().real, torch.ones(40))
    assert off.abs().mean() < 2 / math.sqrt(M) and off.mean().abs() < 0.02


def test_binary_contexts_are_orthogonal_in_expectation() -> None:
    b = BinaryBank(M, count=40, seed=0, learn=False).contexts
    gram = b @ b.T / M
    off = gram[~torch.eye(40, dtype=torch.bool)]
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert off.abs().mean() < 2 / math.sqrt(M) and off.mean().abs() < 0.02


def test_rotation_contexts_are_orthogonal_and_mutually_random() -> None:
    bank = RotationBank(64, count=2, seed=0, learn=False)
    a, b = bank.matrix(0, torch.device("cpu")), bank.matrix(1, torch.device("cpu"))
    torch.testing.assert_close(a @ a.T, torch.eye(64), atol=1e-5, rtol=0)
    assert (a.T @ b).abs().mean() < 2 / math.sqrt(64)  # C_0^T C_1 has no identity left in it


R = 128  # dimension of the retrieval-noise check


def retrieval_ratio(bind) -> float:  # noqa: ANN001
    """Var over random contexts of <c (.) w, x>, divided by |w|^2 |x|^2 (Proposition 2).

    Binding gives exactly E|<c (.) w, x>|^2 = |w (.) x|^2, which is |w|^2 |x|^2 / M when the components have
    equal magnitude (the proposition's "mild conditions"); +-1 vectors make that exact, leaving only the
    sampling of contexts.
    """
    g = torch.Generator().manual_seed(1)
    w, x = (torch.randint(0, 2, (R,), generator=g).double() * 2 - 1 for _ in range(2))
    values = []
    for seed in range(2000):
        bound = bind(w, seed)
        values.append(bound @ x.to(bound.dtype))
    stacked = torch.stack(values)
    variance = (stacked - stacked.mean()).abs().square().mean()
    return float(variance / (w.square().sum() * x.square().sum()))


@pytest.mark.parametrize(
    "bind",
    [
        lambda w, s: w * BinaryBank(R, 1, s, False).contexts[0].double(),
        lambda w, s: w * torch.polar(torch.ones(R, dtype=torch.float64), PhaseBank(R, 1, s, False).phases[0].double()),
        lambda w, s: RotationBank(R, 1, s, False).matrix(0, torch.device("cpu")).double() @ w,
    ],
    ids=["binary", "complex", "rotation"],
)
def test_retrieval_noise_has_variance_one_over_m(bind) -> None:  # noqa: ANN001
    assert retrieval_ratio(bind) * R == pytest.approx(1.0, rel=0.12)


def test_superposed_maps_retrieve_each_task_with_small_noise() -> None:
    """Store two maps W = W1 c1* + W2 c2*, read task 1 with c1: the residual W2 (c2* c1 x) carries 1/M of the energy."""
    g = torch.Generator().manual_seed(2)
    w1, w2 = (torch.randn(32, M, generator=g, dtype=torch.complex128) for _ in range(2))
    c1, c2 = (
        torch.polar(torch.ones(M, dtype=torch.float64), torch.rand(M, generator=g, dtype=torch.float64) * 6.3)
        for _ in range(2)
    )
    x = torch.randn(M, 500, generator=g, dtype=torch.complex128)
    superposed = w1 * c1.conj() + w2 * c2.conj()
    noise = superposed @ (c1[:, None] * x) - w1 @ x
    energy_per_weight = noise.abs().square().mean() / (w2.abs().square().mean() * x.abs().square().mean() * M)
    assert float(energy_per_weight) == pytest.approx(1.0, rel=0.1)  # |eps|^2 ~ |w|^2 |x|^2, i.e. 1/M of |w|^2|x|^2 M


def run_psp(method: str, tasks: int = 3, settings: dict | None = None) -> dict:
    cell = make_cell(
        method,
        "synthetic",
        "GG",
        method_settings=settings,
        stream_settings={"num_tasks": tasks, "steps_per_task": 3},
        backbone={"name": "fc", "hidden": [20]},
        training={"probe_every": 0},
    )
    run = run_cell(cell, WorkerSettings(None, "cpu", 1)).run
    assert run["status"] == "ok", run["traceback"]
    return run


LAYERS = [(64, 20), (20, 2)]  # synthetic 8x8 inputs, one hidden layer of 20, two classes
WEIGHTS = sum(i * o for i, o in LAYERS)
INPUTS = [i for i, _ in LAYERS]
K = 3
TABLE_1 = {  # bytes for K tasks: weights, plus per task what Table 1 adds (float32 = 4 bytes)
    "psp_binary": 4 * WEIGHTS + K * sum(math.ceil(m / 8) for m in INPUTS),  # M bits
    "psp_complex": 8 * WEIGHTS + K * sum(4 * m for m in INPUTS),  # 2MN, then M phases
    "psp_rotation": 4 * WEIGHTS + K * sum(4 * m * m for m in INPUTS),  # MN, then M^2
    "psp_onepower": 8 * WEIGHTS + sum(4 * m for m in INPUTS) + K * 4 * len(INPUTS),  # 2M(N+0.5), then 1
}


@pytest.mark.parametrize("method", sorted(TABLE_1))
def test_storage_follows_table_1(method: str) -> None:
    run = run_psp(method, tasks=K)
    assert run["storage_bytes"] == TABLE_1[method]


def test_complex_layer_passes_gradcheck() -> None:
    torch.manual_seed(0)
    bank = PhaseBank(6, count=2, seed=0, learn=False)
    bank.phases = bank.phases.double()
    layer = PSPLinear(6, 4, bank, state=type("S", (), {"index": 1})())
    weight = layer.weight.detach().to(torch.complex128).requires_grad_()
    x = torch.randn(3, 6, dtype=torch.complex128, requires_grad=True)

    def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return SplitReLU()(F.linear(bank.bind(x, 1), weight)).real  # the path to real logits

    assert torch.autograd.gradcheck(forward, (x, weight))
    one_power = OnePowerBank(6, 2, 0, learn=True)
    one_power.base.data = one_power.base.data.double()
    assert torch.autograd.gradcheck(lambda b: one_power.bind(x.detach(), 2).real.sum() * b.sum(), (one_power.base,))


def fast(local_mix: bool = False) -> PSPFast:
    method = (METHODS.get("psp_fast_localmix") if local_mix else PSPFast)(PSPFastConfig(period=10))
    method.build(
        BuildContext(
            "GG",
            LabelSpace(3, 2, True),
            backbone_factory(BackboneSpec("fc", (5,)), (1, 2, 2)),
            (1, 2, 2),
            torch.device("cpu"),
            0,
        )
    )
    return method


def test_psp_fast_takes_a_new_context_every_step_and_cycles() -> None:
    method = fast()
    method.begin_segment(0, 0)
    x, y = torch.randn(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    seen = []
    for step in range(13):
        method.loss(x, y, 0)
        seen.append(method.state.index)
        method.after_step(step)
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    method.begin_segment(1, 13)
    method.predict(x, 0)
    assert method.state.index == 0
    method.predict(x, 1)
    assert method.state.index == 3  # task 1 began at step 13: context 13 mod 10


def test_local_mix_averages_the_phases_of_neighbouring_contexts() -> None:
    bank = fast(local_mix=True).layers[0].bank
    assert isinstance(bank, PhaseBank)
    torch.testing.assert_close(bank.phase(0), (bank.phases[9] + bank.phases[0] + bank.phases[1]) / 3)
    torch.testing.assert_close(bank.phase(9), (bank.phases[8] + bank.phases[9] + bank.phases[0]) / 3)


@pytest.mark.parametrize("variant", ["binary", "complex"])
def test_context_on_the_kernel_matches_a_convolution_written_out_by_hand(variant: str) -> None:
    from methods.psp import BinaryBank, ContextState, PhaseBank, PSPConv2d

    torch.manual_seed(0)
    state = ContextState()
    bank = BinaryBank(3 * 2 * 2, 2, 5, False) if variant == "binary" else PhaseBank(3 * 2 * 2, 2, 5, False)
    layer = PSPConv2d(3, 2, 2, 1, 0, bank, state)
    state.index = 1
    x = torch.randn(1, 3, 3, 4)
    weight = layer.inner.weight.detach()
    context = bank.bind(torch.ones(1, 12, dtype=weight.dtype), 1)[0].reshape(3, 2, 2)  # c(k) over M x Hw x Ww
    expected = torch.zeros(1, 2, 2, 3, dtype=torch.complex64 if variant == "complex" else torch.float32)
    for o in range(2):
        kernel = weight[o].reshape(3, 2, 2) * context  # eq. 8: the context multiplies every output's kernel
        for i in range(2):
            for j in range(3):
                expected[0, o, i, j] = (x[0, :, i : i + 2, j : j + 2] * kernel).sum()
    assert torch.allclose(layer(x).detach(), expected, atol=1e-5)


def test_bias_shifts_the_real_part_only_and_starts_at_zero() -> None:
    """The authors' HashLinear returns ``r_a + self.bias, r_b``: a real bias on the real part, initialised at 0."""
    torch.manual_seed(0)
    bank = PhaseBank(6, count=2, seed=0, learn=False)
    state = type("S", (), {"index": 1})()
    with_bias, without = PSPLinear(6, 4, bank, state, bias=True), PSPLinear(6, 4, bank, state)
    without.weight.data = with_bias.weight.data.clone()
    x = torch.randn(3, 6)
    torch.testing.assert_close(with_bias(x), without(x))  # 0 at the start
    with_bias.bias.data = torch.arange(4.0)
    shifted = with_bias(x) - without(x)
    torch.testing.assert_close(shifted.real, torch.arange(4.0).expand(3, 4))
    assert shifted.imag.abs().max() == 0
    assert PSPLinear(6, 4, bank, state).bias is None  # eq. 7: none by default


def test_learn_modulus_needs_learned_contexts() -> None:
    from methods.psp import PSPComplexConfig

    with pytest.raises(ValueError, match="learn_contexts"):
        PSPComplexConfig(learn_modulus=True)
    assert PSPComplexConfig(learn_contexts=True, learn_modulus=True).learn_modulus


@pytest.mark.parametrize("local_mix", [False, True])
def test_cartesian_contexts_start_as_the_phase_contexts_and_learn_a_modulus(local_mix: bool) -> None:
    phases = PhaseBank(8, count=4, seed=3, learn=True, local_mix=local_mix)
    cartesian = PhaseBank(8, count=4, seed=3, learn=True, local_mix=local_mix, learn_modulus=True)
    x = torch.randn(2, 8)
    for index in range(4):
        torch.testing.assert_close(cartesian.bind(x, index), phases.bind(x, index), atol=1e-5, rtol=0)
    cartesian.values.data[1] *= 2  # context 1's modulus leaves 1
    modulus = cartesian.context(1).abs()
    torch.testing.assert_close(modulus, torch.full((8,), 1.25 if local_mix else 2.0))  # the mean over contexts
    cartesian.context(1).real.sum().backward()
    assert cartesian.values.grad is not None and cartesian.values.grad.abs().sum() > 0


def test_one_power_with_a_learned_modulus_keeps_the_base_modulus() -> None:
    bank = OnePowerBank(5, 3, 0, learn=True, learn_modulus=True)
    base = bank.values.detach().clone()
    bank.values.data *= 0.5
    bound = bank.bind(torch.ones(1, 5, dtype=torch.complex64), 2)[0]
    torch.testing.assert_close(bound.abs(), torch.full((5,), 0.5))
    torch.testing.assert_close(torch.polar(torch.ones(5), bound.angle()), torch.polar(torch.ones(5), 3 * base.angle()))


AUTHORS = {  # the settings the psp grid gives each variant (the authors' configs/paramsuper.py)
    "psp_binary": {"learn_contexts": True},
    "psp_complex": {"learn_contexts": True, "learn_modulus": True, "bias": True},
    "psp_rotation": {"learn_contexts": True, "bias": True},
    "psp_onepower": {"learn_contexts": True, "learn_modulus": True, "bias": True},
}
BIASES = 4 * sum(o for _, o in LAYERS)
AUTHORS_STORAGE = {  # learned contexts are floats: binary M floats, complex M complex64, one-power's base too
    "psp_binary": 4 * WEIGHTS + K * sum(4 * m for m in INPUTS),
    "psp_complex": 8 * WEIGHTS + BIASES + K * sum(8 * m for m in INPUTS),
    "psp_rotation": 4 * WEIGHTS + BIASES + K * sum(4 * m * m for m in INPUTS),
    "psp_onepower": 8 * WEIGHTS + BIASES + sum(8 * m for m in INPUTS) + K * 4 * len(INPUTS),
}


@pytest.mark.parametrize("method", sorted(AUTHORS))
def test_the_authors_settings_run_and_count_their_bytes(method: str) -> None:
    run = run_psp(method, tasks=K, settings=AUTHORS[method])
    assert run["storage_bytes"] == AUTHORS_STORAGE[method]


def test_the_psp_grid_uses_the_authors_settings() -> None:
    from harness.grid import expand_grid

    cells = [
        c
        for c in expand_grid("psp")
        if c.method.startswith("psp_") and c.method not in ("psp_fast", "psp_fast_localmix")
    ]
    assert cells
    for cell in cells:
        expected = AUTHORS[cell.method]
        if cell.method == "psp_rotation" and not cell.method_config["learn_contexts"]:  # their ...UnitaryNLKHash
            expected = {**expected, "learn_contexts": False}
        assert {k: cell.method_config[k] for k in expected} == expected, cell.tags
        assert tuple(cell.backbone["hidden"]) in {(w,) * 3 for w in (128, 256, 512, 1024, 2048)}  # n_layers: 3
        # (x/255 - 0.1307) / 0.3081 in their code, on MNIST and on Fashion-MNIST alike
        assert cell.stream_config["input_scaling"] == (
            "standardise_mnist" if "fashion" in cell.stream else "standardise"
        )
