"""Task arithmetic, TIES (per-tensor and whole-model trim), Breadcrumbs and Consensus, against hand-computed
values and independent reference computations."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from evomerge.merge.operator import MergeInputs, get_operator
from evomerge.merge.operators.global_trim import STATS_KEY, GlobalTrimThresholds
from evomerge.merge.operators.sparsify import keep_window, trim_to_top
from tests.unit.test_operators_contract import merge_model, resolve_params, run_operator

T = torch.tensor


def test_task_arithmetic_closed_form() -> None:
    base = T([1.0, 2.0, 3.0])
    a, b = T([2.0, 2.0, 1.0]), T([1.0, 4.0, 3.5])
    out = run_operator(
        "task_arithmetic", [a, b], base, per_model=[{"weight": 0.5}, {"weight": 2.0}], shared={"lambda": 0.8}
    )
    expected = base + 0.8 * (0.5 * (a - base) + 2.0 * (b - base))
    torch.testing.assert_close(out, expected)
    normalized = run_operator(
        "task_arithmetic",
        [a, b],
        base,
        per_model=[{"weight": 0.5}, {"weight": 2.0}],
        shared={"normalize": True},
    )
    torch.testing.assert_close(normalized, base + (0.5 * (a - base) + 2.0 * (b - base)) / 2.5)


def test_ties_hand_computed_per_tensor() -> None:
    base = torch.zeros(4)
    t1 = T([3.0, -1.0, 0.5, 2.0])  # keeps the 2 largest: 3, 2
    t2 = T([-2.0, 4.0, 0.1, 1.0])  # keeps 4, -2
    t3 = T([1.0, -3.0, -5.0, 0.2])  # keeps -5, -3
    out = run_operator("ties", [t1, t2, t3], base, shared={"density": 0.5, "trim_scope": "tensor"})
    # trimmed: [3,0,0,2], [-2,4,0,0], [0,-3,-5,0]; sums: [1, 1, -5, 2] -> signs +,+,-,+
    # agreeing means: [3, 4, -5, 2]
    torch.testing.assert_close(out, T([3.0, 4.0, -5.0, 2.0]))
    summed = run_operator(
        "ties",
        [t1, t2, t3],
        base,
        shared={"density": 0.5, "trim_scope": "tensor", "normalize": False, "lambda": 2.0},
    )
    torch.testing.assert_close(summed, 2.0 * T([3.0, 4.0, -5.0, 2.0]))


def test_ties_weighted_election_and_mean() -> None:
    base = torch.ones(2)
    t1, t2 = T([2.0, 0.0]) + 1, T([-1.0, 3.0]) + 1
    out = run_operator(
        "ties", [t1, t2], base, per_model=[{"weight": 1.0}, {"weight": 3.0}], shared={"density": 1.0}
    )
    # weighted: [2, 0], [-3, 9]; election: [-1 -> -, 9 -> +]; agreeing: [-3 / 3, 9 / 3]
    torch.testing.assert_close(out, base + T([-1.0, 3.0]))


def test_ties_density_one_with_agreeing_signs_is_task_arithmetic() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(20, 7, generator=gen)
    deltas = [torch.rand(20, 7, generator=gen) * sign for sign in (1.0, 1.0, 1.0)]
    deltas[1] = deltas[1] * torch.where(torch.rand(20, 7, generator=gen) > 0.5, 1.0, -1.0)
    deltas[0] = deltas[0] * torch.sign(deltas[1])
    deltas[2] = deltas[2] * torch.sign(deltas[1])
    models = [base + d for d in deltas]
    weights = [{"weight": w} for w in (0.7, 1.3, 0.4)]
    ties = run_operator("ties", models, base, per_model=weights, shared={"density": 1.0, "normalize": False})
    ta = run_operator("task_arithmetic", models, base, per_model=weights)
    torch.testing.assert_close(ties, ta)


def test_zero_sign_rule_decides_exact_cancellation() -> None:
    base = torch.zeros(3)
    a, b = T([1.0, -2.0, -1.0]), T([-1.0, -1.0, -3.0])  # entry 0 cancels exactly; the others are negative
    common = {"density": 1.0, "normalize": False, "trim_scope": "tensor"}
    positive = run_operator("ties", [a, b], base, shared={**common, "zero_sign": "positive"})
    majority = run_operator("ties", [a, b], base, shared={**common, "zero_sign": "majority"})
    assert positive[0] == 1.0  # + elected: only a's entry agrees
    assert majority[0] == -1.0  # the tensor's majority sign is -
    torch.testing.assert_close(positive[1:], majority[1:])


def test_per_tensor_trim_keeps_int_d_n_largest_per_model() -> None:
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(31, 13, generator=gen)
    model = base + torch.randn(31, 13, generator=gen)
    for density in (0.05, 0.33, 0.9):
        out = run_operator("ties", [model], base, shared={"density": density, "trim_scope": "tensor"})
        kept = out != base
        n = base.numel()
        assert int(kept.sum()) == max(1, int(density * n))
        magnitudes = (model - base).abs()
        assert magnitudes[kept].min() >= magnitudes[~kept].max()


def two_tensor_models(
    n_models: int, seed: int = 0
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (17, 9), "b.bias": (23,), "c.weight": (4, 5, 6)}
    base = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    scales = {
        "a.weight": 1.0,
        "b.bias": 3.0,
        "c.weight": 0.2,
    }  # tensors differ in scale: global != per tensor
    models = [
        {n: base[n] + scales[n] * torch.randn(base[n].shape, generator=gen) for n in shapes}
        for _ in range(n_models)
    ]
    return base, models


def test_global_trim_threshold_equals_kthvalue_over_the_whole_model() -> None:
    base, models = two_tensor_models(3)
    densities = [0.1, 0.5, 1.0]
    spec = get_operator("ties")
    gp = GlobalTrimThresholds()
    gp.start(3)
    per_model = [{"density": d} for d in densities]
    for p in range(gp.n_passes):
        for name in base:
            params = resolve_params(spec, 3, per_model=per_model, tensor_name=name)
            gp.observe(MergeInputs([m[name] for m in models], base[name], name), params, p)
        gp.end_pass(p)
    thresholds = gp.finish()[STATS_KEY]
    for i, density in enumerate(densities):
        magnitudes = torch.cat([(models[i][n] - base[n]).abs().reshape(-1) for n in base])
        n = magnitudes.numel()
        k = max(1, int(density * n))
        assert thresholds[i] == float(torch.kthvalue(magnitudes, n - k + 1).values)


def test_global_trim_merge_matches_reference() -> None:
    base, models = two_tensor_models(2, seed=4)
    density = 0.25
    merged = merge_model("ties", models, base, shared={"density": density})
    per_tensor = merge_model("ties", models, base, shared={"density": density, "trim_scope": "tensor"})
    trimmed = []
    for m in models:
        magnitudes = torch.cat([(m[n] - base[n]).abs().reshape(-1) for n in base])
        n = magnitudes.numel()
        threshold = torch.kthvalue(magnitudes, n - int(density * n) + 1).values
        trimmed.append(
            {k: torch.where((m[k] - base[k]).abs() >= threshold, m[k] - base[k], 0.0) for k in base}
        )
    for name in base:
        stacked = torch.stack([t[name] for t in trimmed])
        sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
        agree = torch.sign(stacked) == sign
        expected = base[name] + (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
        torch.testing.assert_close(merged[name], expected)
    assert any(not torch.allclose(merged[n], per_tensor[n]) for n in base)


def test_global_trim_without_its_pass_is_an_engine_error() -> None:
    spec = get_operator("ties")
    params = resolve_params(spec, 1)
    with pytest.raises(RuntimeError, match="whole-model pass"):
        spec.fn(MergeInputs([torch.ones(3)], torch.zeros(3), "w"), params)
    assert spec.needs_global_pass is not None
    assert spec.needs_global_pass(params)
    assert not spec.needs_global_pass(resolve_params(spec, 1, dialect="mergekit"))


def test_breadcrumbs_window_hand_computed() -> None:
    base = torch.zeros(10)
    tau = torch.arange(1.0, 11.0) * T([1, -1] * 5)  # magnitudes 1..10
    out = run_operator("breadcrumbs", [tau], base, shared={"density": 0.5, "gamma": 0.2})
    # drop the 2 largest (9, 10) and then the 3 smallest (1, 2, 3): keep magnitudes 4..8
    expected = torch.where((tau.abs() >= 4) & (tau.abs() <= 8), tau, 0.0)
    torch.testing.assert_close(out, expected)
    squeezed = run_operator("breadcrumbs", [tau], base, shared={"density": 0.9, "gamma": 0.2})
    # d + γ > 1: only one outlier can go so that 9 entries stay
    torch.testing.assert_close(squeezed, torch.where(tau.abs() <= 9, tau, 0.0))


def test_breadcrumbs_ties_elects_signs_after_masking() -> None:
    base = torch.zeros(4)
    a, b = T([1.0, 2.0, -3.0, 100.0]), T([-2.0, 1.0, 1.0, 1.0])
    out = run_operator(
        "breadcrumbs_ties", [a, b], base, shared={"density": 0.75, "gamma": 0.25, "normalize": True}
    )
    # a drops 100 (outlier); b drops its largest, -2; nothing else: masked a=[1,2,-3,0], b=[0,1,1,1]
    torch.testing.assert_close(out, T([1.0, 1.5, -3.0, 1.0]))


def test_consensus_k0_is_task_arithmetic_and_masks_are_tall() -> None:
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(9, 4, generator=gen)
    models = [base + torch.randn(9, 4, generator=gen) for _ in range(3)]
    weights = [{"weight": w} for w in (1.0, 0.5, 2.0)]
    k0 = run_operator("consensus", models, base, per_model=weights, shared={"k": 0, "lambda": 0.4})
    ta = run_operator("task_arithmetic", models, base, per_model=weights, shared={"lambda": 0.4})
    torch.testing.assert_close(k0, ta)

    taus = [w["weight"] * (m - base) for w, m in zip(weights, models)]
    mtl = torch.stack(taus).sum(0)
    votes = torch.stack([t.abs() > 0.6 * (mtl - t).abs() for t in taus]).sum(0)
    for k in (1, 2, 3):
        out = run_operator("consensus", models, base, per_model=weights, shared={"k": k, "lambda": 0.4})
        torch.testing.assert_close(out, base + 0.4 * torch.where(votes >= k, mtl, 0.0))
    everything_pruned = run_operator("consensus", models, base, shared={"k": 4})
    torch.testing.assert_close(everything_pruned, base)


def test_consensus_two_tasks_hand_computed() -> None:
    base = torch.zeros(3)
    a, b = T([1.0, 1.0, 0.0]), T([1.0, 0.1, 2.0])
    # τ_MTL = [2, 1.1, 2]; masks (λ = 0.5): a: [1 > .5, 1 > .05, 0 > 1] = [1,1,0]; b: [1, .1 > .5 -> 0, 2 > 0 -> 1]
    out = run_operator("consensus", [a, b], base, shared={"k": 2, "mask_lambda": 0.5})
    torch.testing.assert_close(out, T([2.0, 0.0, 0.0]))


small_floats = st.floats(-3, 3, allow_nan=False, width=32)


@st.composite
def task_inputs(draw: st.DrawFn) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    n = draw(st.integers(2, 30))
    k = draw(st.integers(1, 4))
    base = torch.tensor(draw(st.lists(small_floats, min_size=n, max_size=n)))
    models = [torch.tensor(draw(st.lists(small_floats, min_size=n, max_size=n))) for _ in range(k)]
    weights = draw(st.lists(st.floats(0.1, 2.0), min_size=k, max_size=k))
    return base, models, weights


@settings(max_examples=40, deadline=None)
@given(case=task_inputs(), density=st.floats(0.05, 1.0), method=st.sampled_from(["ties", "breadcrumbs_ties"]))
def test_sign_consensus_is_invariant_to_model_order(
    case: tuple[torch.Tensor, list[torch.Tensor], list[float]], density: float, method: str
) -> None:
    base, models, weights = case
    per_model = [{"weight": w, "density": density} for w in weights]
    shared = {"trim_scope": "tensor", "gamma": 0.1}
    out = run_operator(method, models, base, per_model=per_model, shared=shared)
    reversed_out = run_operator(method, models[::-1], base, per_model=per_model[::-1], shared=shared)
    torch.testing.assert_close(out, reversed_out, atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    case=task_inputs(),
    scale=st.floats(0.25, 4.0),
    method=st.sampled_from(["task_arithmetic", "ties", "breadcrumbs", "consensus"]),
)
def test_task_vector_merges_are_scale_equivariant(
    case: tuple[torch.Tensor, list[torch.Tensor], list[float]], scale: float, method: str
) -> None:
    base, models, weights = case
    per_model = [{"weight": w} for w in weights]
    shared = {"density": 0.6, "trim_scope": "tensor"}
    out = run_operator(method, models, base, per_model=per_model, shared=shared)
    scaled = run_operator(
        method, [m * scale for m in models], base * scale, per_model=per_model, shared=shared
    )
    torch.testing.assert_close(scaled, out * scale, atol=1e-4, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(case=task_inputs(), lam=st.floats(-2.0, 2.0))
def test_task_arithmetic_is_linear_in_the_task_vectors(
    case: tuple[torch.Tensor, list[torch.Tensor], list[float]], lam: float
) -> None:
    base, models, weights = case
    per_model = [{"weight": w} for w in weights]
    out = run_operator("task_arithmetic", models, base, per_model=per_model, shared={"lambda": lam})
    singles = [
        run_operator("task_arithmetic", [m], base, per_model=[p], shared={"lambda": lam}) - base
        for m, p in zip(models, per_model)
    ]
    torch.testing.assert_close(out, base + sum(singles), atol=1e-4, rtol=1e-4)


def test_global_trim_budget_follows_per_tensor_densities() -> None:
    base, models = two_tensor_models(1, seed=6)
    density = [{"filter": "a.weight", "value": 0.5}, {"value": 0.1}]
    spec = get_operator("ties")
    gp = GlobalTrimThresholds()
    gp.start(1)
    for p in range(gp.n_passes):
        for name in base:
            params = resolve_params(spec, 1, shared={"density": density}, tensor_name=name)
            gp.observe(MergeInputs([models[0][name]], base[name], name), params, p)
        gp.end_pass(p)
    (threshold,) = gp.finish()[STATS_KEY]
    magnitudes = torch.cat([(models[0][n] - base[n]).abs().reshape(-1) for n in base])
    budget = 0.5 * base["a.weight"].numel() + 0.1 * (base["b.bias"].numel() + base["c.weight"].numel())
    k = int(budget)
    assert threshold == float(torch.kthvalue(magnitudes, magnitudes.numel() - k + 1).values)


nonzero = st.floats(-100, 100, allow_nan=False, width=32).filter(lambda x: x != 0)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(nonzero | st.sampled_from([1.0, -1.0, 2.0]), min_size=1, max_size=60),
    density=st.floats(0.01, 1.0),
    gamma=st.floats(0.0, 0.5),
)
def test_sparsifiers_keep_exactly_their_budget(values: list[float], density: float, gamma: float) -> None:
    tau = torch.tensor(values)
    n = tau.numel()
    trimmed = trim_to_top(tau.clone(), density)
    assert int((trimmed != 0).sum()) == (n if density >= 1 else max(1, int(density * n)))
    window = keep_window(tau.clone(), density, gamma)
    assert int((window != 0).sum()) == (n if density >= 1 else int(density * n))
    kept, dropped = tau.abs()[window != 0], tau.abs()[window == 0]
    if kept.numel() and dropped.numel() and int(gamma * n) == 0:
        assert kept.min() >= dropped.max()  # no outliers to drop: the window is the top of the order
