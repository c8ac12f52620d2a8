"""SLERP, multi-SLERP, the Karcher mean and Model Stock on hand-computed geometric examples."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from evomerge.errors import ConfigError
from tests.unit.test_operators_contract import run_operator

T = torch.tensor
E1, E2 = T([1.0, 0.0]), T([0.0, 1.0])


def test_slerp_endpoints() -> None:
    gen = torch.Generator().manual_seed(0)
    base, other = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    torch.testing.assert_close(run_operator("slerp", [other], base, shared={"t": 0.0}), base)
    torch.testing.assert_close(run_operator("slerp", [other], base, shared={"t": 1.0}), other)


def test_slerp_quarter_circle() -> None:
    out = run_operator("slerp", [2 * E2], 2 * E1, shared={"t": 1 / 3})
    torch.testing.assert_close(out, 2 * T([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    half = run_operator("slerp", [E2], E1)  # default t = 0.5
    torch.testing.assert_close(half, T([1.0, 1.0]) / math.sqrt(2))


@pytest.mark.parametrize("factor", [3.0, -2.0])
def test_slerp_colinear_falls_back_to_lerp(factor: float) -> None:
    base = T([1.0, 2.0, -1.0])
    out = run_operator("slerp", [factor * base], base, shared={"t": 0.25})
    torch.testing.assert_close(out, 0.75 * base + 0.25 * factor * base)


def test_slerp_zero_base_is_finite() -> None:
    out = run_operator("slerp", [T([1.0, 2.0])], torch.zeros(2), shared={"t": 0.5})
    assert torch.isfinite(out).all()


def test_multislerp_two_orthonormal_is_the_bisector() -> None:
    out = run_operator("multislerp", [E1, E2])
    torch.testing.assert_close(out, T([1.0, 1.0]) / math.sqrt(2))


def test_multislerp_with_base_works_on_task_vectors() -> None:
    base = T([5.0, 5.0])
    out = run_operator(
        "multislerp", [base + 2 * E1, base + 4 * E2], base, per_model=[{"weight": 1.0}, {"weight": 3.0}]
    )
    direction = (0.25 * E1 + 0.75 * E2) / torch.linalg.vector_norm(0.25 * E1 + 0.75 * E2)
    torch.testing.assert_close(out, base + (0.25 * 2 + 0.75 * 4) * direction)


def test_multislerp_identical_directions_keep_the_direction_and_mean_norm() -> None:
    u = T([0.6, 0.8, 0.0])
    out = run_operator("multislerp", [1 * u, 2 * u, 6 * u])
    torch.testing.assert_close(out, 3 * u)


def test_multislerp_antipodal_pair_falls_back_and_larger_sets_raise() -> None:
    out = run_operator("multislerp", [E1, -E1], per_model=[{"weight": 1.0}, {"weight": 1.0}])
    torch.testing.assert_close(out, torch.zeros(2))
    with pytest.raises(ConfigError, match="cancel"):
        run_operator("multislerp", [E1, -E1, E2, -E2])


def test_karcher_identical_directions_and_orthogonal_pair() -> None:
    u = T([0.0, 0.6, 0.8])
    torch.testing.assert_close(run_operator("karcher", [u, 3 * u]), 2 * u)
    torch.testing.assert_close(run_operator("karcher", [E1, E2]), T([1.0, 1.0]) / math.sqrt(2))


def test_karcher_is_the_geodesic_mean_of_three_angles() -> None:
    angles = [0.0, 0.3, 1.2]
    points = [T([math.cos(a), math.sin(a)]) for a in angles]
    out = run_operator("karcher", points, shared={"max_iter": 50, "tol": 1e-9})
    mean_angle = sum(angles) / 3  # on a circle the Karcher mean is the mean angle
    torch.testing.assert_close(out, T([math.cos(mean_angle), math.sin(mean_angle)]), atol=1e-5, rtol=1e-5)


def test_karcher_weights_pull_toward_the_heavier_input() -> None:
    out = run_operator(
        "karcher", [E1, E2], per_model=[{"weight": 3.0}, {"weight": 1.0}], shared={"max_iter": 50}
    )
    angle = math.atan2(float(out[1]), float(out[0]))
    assert angle == pytest.approx(math.pi / 8, abs=1e-4)


def test_model_stock_two_models_hand_computed() -> None:
    base = T([1.0, 1.0])
    # τ1 = (1, 0), τ2 = (1, 1): cos φ = 1/√2, t = 2c/(1 + c)
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    out = run_operator("model_stock", [base + E1, base + E1 + E2], base)
    torch.testing.assert_close(out, base + t * T([1.0, 0.5]))
    orthogonal = run_operator("model_stock", [base + E1, base + E2], base)
    torch.testing.assert_close(orthogonal, base)  # cos φ = 0: t = 0


def test_model_stock_three_models_angle_vs_cosine() -> None:
    base = torch.zeros(3)
    taus = [T([1.0, 0.0, 0.0]), T([1.0, 1.0, 0.0]) / math.sqrt(2), T([0.0, 1.0, 1.0])]
    # pairwise angles: 45°, 90°, 60° (τ1·τ3 = 0; τ2·τ3 = 1/√2 / √2 = 1/2)
    cosines = [1 / math.sqrt(2), 0.0, 0.5]
    mean_cos = sum(cosines) / 3
    angle_cos = math.cos(sum(math.acos(c) for c in cosines) / 3)
    average = sum(taus) / 3
    for mode, c in (("cosine", mean_cos), ("angle", angle_cos)):
        t = 3 * c / (1 + 2 * c)
        out = run_operator("model_stock", taus, base, shared={"angle_average": mode})
        torch.testing.assert_close(out, t * average)
    assert mean_cos != pytest.approx(angle_cos)


def test_model_stock_filter_wise_uses_one_ratio_per_row() -> None:
    base = torch.zeros(2, 2)
    a = torch.stack([E1, E1])
    b = torch.stack([E1, E2])  # row 0 colinear (t = 1), row 1 orthogonal (t = 0)
    out = run_operator("model_stock", [a, b], base, shared={"filter_wise": True})
    torch.testing.assert_close(out, torch.stack([E1, torch.zeros(2)]))


def test_model_stock_singular_ratio_keeps_the_base() -> None:
    base = T([2.0, -1.0])
    out = run_operator("model_stock", [base + E1, base - E1], base)  # cos φ = −1: 1 + cos φ = 0
    torch.testing.assert_close(out, base)


vectors = st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=3, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    k=st.integers(2, 4),
    method=st.sampled_from(["karcher", "multislerp", "model_stock"]),
    scale=st.floats(0.3, 3.0),
)
def test_sphere_merges_are_permutation_invariant_and_scale_equivariant(
    data: st.DataObject, k: int, method: str, scale: float
) -> None:
    n = data.draw(st.integers(3, 12))
    rows = [
        data.draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=n, max_size=n))
        for _ in range(k + 1)
    ]
    base, models = torch.tensor(rows[0]), [torch.tensor(r) + 0.5 for r in rows[1:]]
    if any(float(torch.linalg.vector_norm(m - base)) < 0.1 for m in models):
        return  # near-zero task vectors make directions ill-defined
    taus = [m - base for m in models]
    if method == "model_stock" and any(
        abs(float(torch.nn.functional.cosine_similarity(a, b, dim=0))) > 0.999 for a in taus for b in taus if a is not b
    ):
        return  # (anti)parallel task vectors: arccos has an infinite slope at ±1, rounding moves the angle
    use_base = base if method in ("multislerp", "model_stock") else None
    try:
        out = run_operator(method, models, use_base)
    except ConfigError:
        return  # multislerp: weighted directions cancel
    shuffled = run_operator(method, models[::-1], use_base)
    torch.testing.assert_close(out, shuffled, atol=1e-4, rtol=1e-4)
    scaled = run_operator(method, [m * scale for m in models], None if use_base is None else use_base * scale)
    torch.testing.assert_close(scaled, out * scale, atol=1e-4, rtol=1e-4)
