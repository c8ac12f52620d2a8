"""OPCM (continual merging by orthogonal projection) and DOGE (projected data-free correction) against
hand-computed values, an autograd check of DOGE's closed-form gradient and the streaming merger."""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from evomerge.errors import ConfigError
from evomerge.merge.operator import get_operator
from evomerge.merge.operators.doge import (
    TaskVectorObjective,
    optimise_delta,
    shared_basis,
    task_coefficients,
)
from evomerge.merge.operators.opcm import ContinualMerger, orthogonal_residual_
from tests.unit.test_operators_contract import inputs_for, merge_model, resolve_params, run_operator

T = torch.tensor


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def unit(i: int, j: int, n: int = 4) -> torch.Tensor:
    m = torch.zeros(n, n)
    m[i, j] = 1.0
    return m


# ---------------------------------------------------------------------------------------------- OPCM
TASK = torch.arange(1.0, 17.0).reshape(4, 4)
UPDATE = torch.diag(T([4.0, 2.0, 1.0, 0.0]))  # shares 4/7, 6/7, 1 of Σs; rank 3


@pytest.mark.parametrize(
    ("alpha", "removed"),
    [
        (0.5, [(0, 0), (1, 1), (2, 2)]),  # 4/7 > 0.5: no block beyond the diagonal
        (0.6, [(0, 0), (1, 1), (2, 2)]),  # block of 1 is its diagonal entry
        (0.9, [(0, 0), (1, 1), (2, 2), (0, 1), (1, 0)]),  # 6/7 <= 0.9: 2x2 block
        (1.0, [(i, j) for i in range(3) for j in range(3)]),  # the whole rank-3 block
    ],
)
def test_residual_removes_the_diagonal_pairs_and_the_dominant_block(alpha: float, removed: list[tuple[int, int]]) -> None:
    expected = TASK.clone()
    for i, j in removed:
        expected[i, j] = 0.0  # singular pairs of a diagonal matrix are ±(e_i, e_i): P_ij = ±τ_ij
    out = orthogonal_residual_(TASK.clone(), UPDATE, alpha)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)  # (3,3) stays: s_3 = 0 spans nothing


def test_residual_against_a_zero_update_is_the_task() -> None:
    assert torch.equal(orthogonal_residual_(TASK.clone(), torch.zeros(4, 4), 0.5), TASK)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    rank=st.integers(1, 6),
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_residual_is_an_orthogonal_projection_off_the_update(rows: int, cols: int, rank: int, alpha: float, seed: int) -> None:
    update = randn(rows, rank, seed=seed).double() @ randn(rank, cols, seed=seed + 1).double()
    task = randn(rows, cols, seed=seed + 2).double()
    out = orthogonal_residual_(task.clone(), update, alpha)
    assert abs(float((out * update).sum())) < 1e-9 * (1 + float(update.norm() * task.norm()))
    assert abs(float(((task - out) * out).sum())) < 1e-9 * (1 + float(task.norm()) ** 2)  # removed ⊥ kept
    torch.testing.assert_close(orthogonal_residual_(out.clone(), update, alpha), out)  # idempotent


@pytest.mark.parametrize("scaling", ["global", "tensor"])
def test_one_model_gives_that_model(scaling: str) -> None:
    models, base = inputs_for("opcm", n_models=1)
    out = run_operator("opcm", models, base, shared={"scaling": scaling})
    torch.testing.assert_close(out, models[0], atol=1e-6, rtol=1e-5)


def test_orthogonal_task_vectors_add_then_scale_to_the_mean_norm() -> None:
    base = {"w": randn(4, 4, seed=0), "b": randn(2, seed=1)}
    taus = [{"w": 3 * unit(0, 0), "b": T([1.0, 0.0])}, {"w": 4 * unit(1, 1), "b": T([0.0, 2.0])}]
    models = [{k: base[k] + tau[k] for k in base} for tau in taus]
    total = {k: taus[0][k] + taus[1][k] for k in base}  # τ2 has no part along τ1's one singular pair
    out = merge_model("opcm", models, base)
    ratio = ((math.sqrt(10) + math.sqrt(20)) / 2) / math.sqrt(30)  # mean ‖τ_i‖ / ‖τ1 + τ2‖, whole model
    for k in base:
        torch.testing.assert_close(out[k], base[k] + ratio * total[k])
    per_tensor = merge_model("opcm", models, base, shared={"scaling": "tensor"})
    torch.testing.assert_close(per_tensor["w"], base["w"] + (3.5 / 5) * total["w"])
    torch.testing.assert_close(per_tensor["b"], base["b"] + (1.5 / math.sqrt(5)) * total["b"])


def test_merging_the_same_model_twice_gives_that_model() -> None:
    """τ2 = τ1 lies entirely on τ1's singular pairs: nothing is added, and the norm is kept."""
    models, base = inputs_for("opcm", n_models=1)
    twice = run_operator("opcm", [models[0], models[0].clone()], base)
    torch.testing.assert_close(twice, models[0], atol=1e-5, rtol=1e-5)
    plain_sum = run_operator("opcm", [models[0], models[0].clone()], base, shared={"project": False})
    torch.testing.assert_close(plain_sum, models[0], atol=1e-5, rtol=1e-5)  # 2τ1 rescaled to ‖τ1‖


def test_opcm_is_deterministic_and_order_dependent() -> None:
    models, base = inputs_for("opcm", n_models=3, shape=(7, 5))
    assert base is not None
    first = run_operator("opcm", models, base)
    assert torch.equal(first, run_operator("opcm", [m.clone() for m in models], base.clone()))
    assert not torch.allclose(first, run_operator("opcm", models[::-1], base))


def three_models(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    base = {"w": randn(6, 5, seed=seed), "v": randn(5, seed=seed + 1), "ids": torch.arange(4)}
    models = [
        {"w": base["w"] + randn(6, 5, seed=seed + 10 + i, scale=0.1),
         "v": base["v"] + randn(5, seed=seed + 20 + i, scale=0.1), "ids": torch.arange(4)}
        for i in range(3)
    ]
    return base, models


@pytest.mark.parametrize("scaling", ["global", "tensor"])
def test_continual_merger_matches_the_operator_after_every_step(scaling: str) -> None:
    base, models = three_models()
    floats = {k: v for k, v in base.items() if v.is_floating_point()}
    merger = ContinualMerger(base, alpha=0.5, scaling=scaling)
    for t in range(1, 4):
        merger.add(models[t - 1])
        expected = merge_model("opcm", [{k: m[k] for k in floats} for m in models[:t]], floats,
                               shared={"scaling": scaling})
        state = merger.state_dict()
        for k in floats:
            torch.testing.assert_close(state[k], expected[k], atol=1e-5, rtol=1e-5)
        assert state["ids"] is base["ids"]
    assert merger.steps == 3


def test_continual_merger_keeps_no_reference_to_added_models() -> None:
    base, models = three_models()
    merger = ContinualMerger(base)
    for model in models:
        refs = [weakref.ref(t) for t in model.values() if t.is_floating_point()]
        merger.add(model)
        del model
    del models
    gc.collect()
    assert all(r() is None for r in refs)


def test_continual_merger_rejects_a_mismatched_model_and_keeps_its_state() -> None:
    base, models = three_models()
    merger = ContinualMerger(base)
    merger.add(models[0])
    before = {k: v.clone() for k, v in merger.state_dict().items()}
    with pytest.raises(ConfigError, match="'w'"):
        merger.add({**models[1], "w": torch.zeros(5, 6)})
    with pytest.raises(ConfigError, match="'v'"):
        merger.add({k: v for k, v in models[1].items() if k != "v"})
    for k, v in merger.state_dict().items():
        assert torch.equal(v, before[k])
    assert merger.steps == 1


@pytest.mark.parametrize(("kwargs", "field"), [({"alpha": 1.5}, "'alpha'"), ({"scaling": "layer"}, "'scaling'")])
def test_continual_merger_validates_its_settings(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ContinualMerger({}, **kwargs)


# ---------------------------------------------------------------------------------------------- DOGE
def reference_loss(taus: list[torch.Tensor], delta: torch.Tensor, lambdas: list[float]) -> torch.Tensor:
    """The paper's data-free loss written out directly: Σ_j Σ_rows (Σ_cols τ_j ⊙ (τ_j − Σ_i λ_i (τ_i + δ)))²."""
    merged = sum(lam * (tau + delta) for lam, tau in zip(lambdas, taus))
    return sum((tau * (tau - merged)).sum(dim=1).pow(2).sum() for tau in taus)  # type: ignore[return-value]


def doge_problem(
    k: int = 3, rows: int = 8, cols: int = 6, seed: int = 0, scale: float = 0.3
) -> tuple[list[torch.Tensor], torch.Tensor]:
    base = randn(rows, cols, seed=seed)
    return [base + randn(rows, cols, seed=seed + 1 + i, scale=scale) for i in range(k)], base


def test_closed_form_objective_and_gradient_match_autograd_of_the_loss() -> None:
    models, base = doge_problem()
    taus = [m.double() - base.double() for m in models]
    lambdas = task_coefficients(models, base, 0.07)
    delta = randn(8, 6, seed=99, scale=0.05).double().requires_grad_(True)
    loss = reference_loss(taus, delta, lambdas)
    loss.backward()
    objective = TaskVectorObjective([m.double() for m in models], base.double(), lambdas)
    assert objective.value(delta.detach()) == pytest.approx(float(loss.detach()), rel=1e-9)
    assert delta.grad is not None
    torch.testing.assert_close(objective.gradient(delta.detach(), torch.empty_like(delta)), delta.grad)


def test_task_coefficients_are_eta_over_the_norm() -> None:
    base = torch.zeros(2, 2)
    lambdas = task_coefficients([T([[3.0, 4.0], [0.0, 0.0]]), base.clone()], base, 0.5)
    assert lambdas == [pytest.approx(0.1), 0.0]


def test_doge_lowers_its_objective_below_task_arithmetic() -> None:
    """At a fine-tune's scale (|τ| ~ 0.01) the reference's 400 steps at lr 1e-4 nearly zero the loss."""
    models, base = doge_problem(scale=0.01)
    lambdas = task_coefficients(models, base, 0.07)
    objective = TaskVectorObjective(models, base, lambdas)
    basis = shared_basis(models, base, 6)
    delta = optimise_delta(objective, basis, 400, 1e-4)
    assert objective.value(delta) < 0.1 * objective.value(torch.zeros_like(base))


def test_shared_basis_is_the_direction_the_tasks_share() -> None:
    base = torch.zeros(6, 6)
    first = torch.diag(T([6.0, 5.0, 4.0, 0.3, 0.2, 0.1]))  # leading rows e0, e1, e2
    second = torch.diag(T([6.0, 0.3, 0.2, 5.0, 4.0, 0.1]))  # leading rows e0, e3, e4
    basis = shared_basis([first, second], base, 6)  # 3 directions each, keeps ⌊6/6⌋ = 1
    assert basis is not None and basis.shape == (6, 1)
    torch.testing.assert_close(basis.abs().squeeze(1), T([1.0, 0, 0, 0, 0, 0]))


def test_steps_zero_is_task_arithmetic_with_adaptive_coefficients() -> None:
    base = T([[1.0, 2.0], [3.0, 4.0]])
    taus = [T([[3.0, 0.0], [0.0, -4.0]]), T([[0.0, 1.0], [0.0, 0.0]])]
    out = run_operator("doge", [base + t for t in taus], base, shared={"steps": 0, "density": 1.0, "eta": 0.5})
    torch.testing.assert_close(out, base + 0.5 * taus[0] / 5 + 0.5 * taus[1])
    trimmed = run_operator(
        "doge", [base + t for t in taus], base, shared={"steps": 0, "density": 0.25, "eta": 0.5, "trim_scope": "tensor"}
    )
    torch.testing.assert_close(trimmed, base + T([[0.0, 0.0], [0.0, -0.4]]) + 0.5 * taus[1])


def test_global_trim_keeps_the_top_density_over_every_tensor() -> None:
    base = {"a": torch.zeros(2, 2), "b": torch.zeros(4)}
    tau = {"a": T([[5.0, -1.0], [0.5, 2.0]]), "b": T([-4.0, 0.1, 3.0, 0.2])}  # top 4 of 8: 5, -4, 3, 2
    out = merge_model("doge", [tau], base, shared={"steps": 0, "density": 0.5, "eta": 1.0})
    norm = {k: float(v.norm()) for k, v in tau.items()}
    torch.testing.assert_close(out["a"], T([[5.0, 0.0], [0.0, 2.0]]) / norm["a"])
    torch.testing.assert_close(out["b"], T([-4.0, 0.0, 3.0, 0.0]) / norm["b"])


def test_a_basis_over_every_row_direction_freezes_delta() -> None:
    models, base = doge_problem(k=1, rows=2, cols=5)
    models, base = [models[0].double()], base.double()  # float32 round-off off the basis would be a step
    shared = {"steps": 50, "density": 1.0}
    frozen = run_operator("doge", models, base, shared={**shared, "subspace": 1})  # basis spans R^2
    torch.testing.assert_close(frozen, base + 0.07 * (models[0] - base) / float((models[0] - base).norm()))
    assert not torch.allclose(run_operator("doge", models, base, shared={**shared, "subspace": 6}), frozen)


def test_doge_output_is_the_masked_sum_of_the_corrected_task_vectors() -> None:
    models, base = doge_problem()
    out = run_operator("doge", models, base, shared={"density": 1.0, "steps": 30})
    lambdas = task_coefficients(models, base, 0.07)
    delta = optimise_delta(TaskVectorObjective(models, base, lambdas), shared_basis(models, base, 6), 30, 1e-4)
    expected = base + sum(lam * (m - base + delta) for lam, m in zip(lambdas, models))
    torch.testing.assert_close(out, expected)


# ------------------------------------------------------------------------------------- both, contract
@pytest.mark.parametrize("method", ["opcm", "doge"])
def test_contract_inputs_untouched_identical_inputs_and_empty_tensors(method: str) -> None:
    models, base = inputs_for(method)
    assert base is not None
    copies, base_copy = [m.clone() for m in models], base.clone()
    out = run_operator(method, models, base, shared={"steps": 20} if method == "doge" else None)
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert all(torch.equal(m, c) for m, c in zip(models, copies)) and torch.equal(base, base_copy)
    torch.testing.assert_close(run_operator(method, [base.clone() for _ in models], base), base)
    empty, empty_base = inputs_for(method, shape=(0, 4))
    assert run_operator(method, empty, empty_base).shape == (0, 4)


@pytest.mark.parametrize(("method", "shared"), [("opcm", {}), ("doge", {"steps": 20})])
def test_float64_inputs_stay_float64_and_agree_with_float32(method: str, shared: dict[str, Any]) -> None:
    models, base = inputs_for(method)
    assert base is not None
    out32 = run_operator(method, models, base, shared=shared)
    out64 = run_operator(method, [m.double() for m in models], base.double(), shared=shared)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("method", "setting", "field"),
    [
        ("opcm", {"alpha": -0.1}, "'alpha'"),
        ("opcm", {"alpha": 1.01}, "'alpha'"),
        ("opcm", {"scaling": "layer"}, "'scaling'"),
        ("opcm", {"project": "maybe"}, "'project'"),
        ("doge", {"eta": 0.0}, "'eta'"),
        ("doge", {"subspace": 0}, "'subspace'"),
        ("doge", {"subspace": 2.5}, "'subspace'"),
        ("doge", {"density": 0.0}, "'density'"),
        ("doge", {"density": 1.5}, "'density'"),
        ("doge", {"steps": -1}, "'steps'"),
        ("doge", {"lr": -1e-3}, "'lr'"),
        ("doge", {"trim_scope": "layer"}, "'trim_scope'"),
    ],
)
def test_bad_parameter_values_name_the_parameter(method: str, setting: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        resolve_params(get_operator(method), 2, shared=setting)


@pytest.mark.parametrize(
    ("method", "defaults"),
    [
        ("opcm", {"alpha": 0.5, "scaling": "global", "project": True}),
        ("doge", {"eta": 0.07, "subspace": 6, "steps": 400, "lr": 1e-4, "trim_scope": "global"}),
    ],
)
def test_defaults_follow_the_reference_configs(method: str, defaults: dict[str, Any]) -> None:
    params = resolve_params(get_operator(method), 1)
    assert {k: params[k] for k in defaults} == defaults
    if method == "doge":
        assert params.model("density") == [0.3]


def test_the_global_trim_pass_names_the_operator_that_uses_it() -> None:
    from evomerge.merge.operator import MergeInputs, get_operator
    from evomerge.merge.params import ResolvedParams

    spec = get_operator("doge")
    assert spec.global_pass is not None
    global_pass = spec.global_pass()
    global_pass.start(1)
    with pytest.raises(RuntimeError, match="^doge:"):
        global_pass.observe(MergeInputs([torch.ones(3)], None, "w"), ResolvedParams({}), 0)
