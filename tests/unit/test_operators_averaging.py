"""Linear averaging, metrics-weighted averaging (MWA) and passthrough."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from evomerge.errors import ConfigError
from evomerge.merge.operators.mwa import metric_weights
from tests.unit.test_operators_contract import run_operator

T = torch.tensor


def test_linear_weighted_average_and_unnormalised_sum() -> None:
    a, b = T([1.0, 4.0]), T([3.0, -2.0])
    weights = [{"weight": 1.0}, {"weight": 3.0}]
    torch.testing.assert_close(run_operator("linear", [a, b], per_model=weights), (a + 3 * b) / 4)
    raw = run_operator("linear", [a, b], per_model=weights, shared={"normalize": False})
    torch.testing.assert_close(raw, a + 3 * b)


def test_linear_weights_summing_to_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'weight'"):
        run_operator("linear", [T([1.0]), T([2.0])], per_model=[{"weight": 1.0}, {"weight": -1.0}])


def test_linear_weight_gradient_over_depth() -> None:
    from evomerge.merge.operator import MergeInputs, get_operator
    from tests.unit.test_operators_contract import resolve_params

    spec = get_operator("linear")
    a, b = T([0.0]), T([1.0])
    outs = []
    for t in (0.0, 0.5, 1.0):
        params = resolve_params(spec, 2, per_model=[{"weight": 1.0}, {"weight": [0.0, 2.0]}], t=t)
        outs.append(float(spec.fn(MergeInputs([a, b], None, "w"), params)[0]))
    assert outs == pytest.approx([0.0, 0.5, 2 / 3])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=4, max_size=4), min_size=1, max_size=5
    ),
    data=st.data(),
)
def test_linear_is_permutation_invariant_and_linear(rows: list[list[float]], data: st.DataObject) -> None:
    tensors = [T(r) for r in rows]
    weights = [{"weight": data.draw(st.floats(0.1, 3.0))} for _ in rows]
    out = run_operator("linear", tensors, per_model=weights)
    reversed_out = run_operator("linear", tensors[::-1], per_model=weights[::-1])
    torch.testing.assert_close(out, reversed_out, atol=1e-5, rtol=1e-5)
    shift, scale = T([1.0, -2.0, 0.5, 3.0]), data.draw(st.floats(-3.0, 3.0))
    moved = run_operator("linear", [scale * x + shift for x in tensors], per_model=weights)
    torch.testing.assert_close(moved, scale * out + shift, atol=1e-4, rtol=1e-4)


def test_mwa_penalty_zero_is_the_uniform_average() -> None:
    tensors = [T([1.0, 2.0]), T([3.0, 0.0]), T([8.0, 1.0])]
    metrics = [{"metric": m} for m in (0.3, 1.7, 9.0)]
    out = run_operator("mwa", tensors, per_model=metrics, shared={"penalty": 0.0})
    torch.testing.assert_close(out, sum(tensors) / 3)


def test_mwa_loss_and_step_weighting_hand_computed() -> None:
    a, b = T([0.0]), T([1.0])
    loss = run_operator("mwa", [a, b], per_model=[{"metric": 1.0}, {"metric": 2.0}])
    # M = 1/L = [1, 0.5], p = 1 → w = [2/3, 1/3]
    torch.testing.assert_close(loss, T([1 / 3]))
    step = run_operator(
        "mwa",
        [a, b],
        per_model=[{"metric": 100.0}, {"metric": 300.0}],
        shared={"metric_type": "step", "penalty": 2.0},
    )
    # M = s = [100, 300], p = 2 → w ∝ [1, 9]
    torch.testing.assert_close(step, T([0.9]))


@settings(max_examples=60, deadline=None)
@given(
    metrics=st.lists(st.floats(1e-3, 1e6), min_size=1, max_size=6),
    penalty=st.floats(0.0, 20.0),
    factor=st.floats(1e-3, 1e3),
    kind=st.sampled_from(["loss", "step"]),
)
def test_mwa_weights_are_a_distribution_invariant_to_metric_units(
    metrics: list[float], penalty: float, factor: float, kind: str
) -> None:
    weights = metric_weights(metrics, kind, penalty)
    assert sum(weights) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights)
    rescaled = metric_weights([m * factor for m in metrics], kind, penalty)
    assert rescaled == pytest.approx(weights, abs=1e-9)
    best = (
        min(range(len(metrics)), key=lambda i: metrics[i])
        if kind == "loss"
        else max(range(len(metrics)), key=lambda i: metrics[i])
    )
    assert weights[best] == pytest.approx(max(weights))


def test_mwa_large_penalty_concentrates_on_the_best_checkpoint() -> None:
    weights = metric_weights([0.9, 0.5, 0.7], "loss", 200.0)
    assert weights[1] == pytest.approx(1.0, abs=1e-12)
    assert all(math.isfinite(w) for w in weights)


def test_passthrough_returns_the_input_or_its_scaled_copy() -> None:
    x = T([1.0, -2.0])
    assert run_operator("passthrough", [x]) is x
    torch.testing.assert_close(run_operator("passthrough", [x], per_model=[{"scale": 0.5}]), x * 0.5)
