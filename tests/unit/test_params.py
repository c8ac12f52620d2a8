"""Parameter resolution: mergekit's precedence, gradients and filters, and range checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from evomerge.merge.params import SAME, ParamSpec, evaluate_setting, resolve
from evomerge.plan import ConditionalParameter

num = ParamSpec("x", float)


def test_scalar_and_gradient_interpolation() -> None:
    assert evaluate_setting("w", 0.5, 0.3, num.cast) == 0.5
    assert evaluate_setting("w", [0.0, 1.0], 0.25, num.cast) == pytest.approx(0.25)
    # three points: t=0.75 lies halfway between the 2nd and 3rd
    assert evaluate_setting("w", [0.0, 1.0, 3.0], 0.75, num.cast) == pytest.approx(2.0)
    assert evaluate_setting("w", [0.0, 1.0, 3.0], 1.0, num.cast) == pytest.approx(3.0)


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=8))
def test_gradient_hits_each_point_exactly_at_its_layer(values: list[float]) -> None:
    n = len(values)
    for i, v in enumerate(values):
        assert evaluate_setting("w", values, i / (n - 1), num.cast) == pytest.approx(v, abs=1e-12)


def test_filters_first_match_wins_and_fallback() -> None:
    setting = [
        ConditionalParameter(filter="self_attn", value=0.1),
        ConditionalParameter(filter="mlp", value=[0.2, 0.4]),
        ConditionalParameter(value=0.9),
    ]
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", setting, 0.0, num.cast) == 0.1
    assert evaluate_setting("model.layers.1.mlp.up_proj.weight", setting, 1.0, num.cast) == pytest.approx(0.4)
    assert evaluate_setting("model.norm.weight", setting, 0.0, num.cast) == 0.9
    assert evaluate_setting("model.norm.weight", setting[:2], 0.0, num.cast) is None


def test_non_numeric_list_is_indexed() -> None:
    s = ParamSpec("mode", str, choices=("a", "b", "c"))
    assert evaluate_setting("w", ["a", "b", "c"], 0.6, s.cast) == "b"


def test_precedence_model_then_shared_then_default() -> None:
    specs = [ParamSpec("weight", float, scope="model"), ParamSpec("lam", float, default=1.0)]
    out = resolve(
        specs, dialect="evomerge", tensor_name="t", t=0.0,
        shared_sources=[None, {"lam": 0.5, "weight": 0.2}],
        model_sources=[[{"weight": 0.7}, {"lam": 0.5, "weight": 0.2}], [None, {"lam": 0.5, "weight": 0.2}]],
    )
    assert out.model("weight") == [0.7, 0.2]
    assert out["lam"] == 0.5


def test_required_parameter_missing_names_it() -> None:
    with pytest.raises(ConfigError, match="missing required parameter 'weight'"):
        resolve([ParamSpec("weight", float, scope="model")], dialect="evomerge", tensor_name="t", t=0,
                shared_sources=[], model_sources=[[None]])


def test_dialect_defaults() -> None:
    spec = ParamSpec("scope", str, default="global", mergekit_default="tensor", choices=("global", "tensor"))
    assert spec.default_for("mergekit") == "tensor"
    assert spec.default_for("evomerge") == "global"
    plain = ParamSpec("lam", float, default=1.0)
    assert plain.default_for("mergekit") == 1.0 and plain.mergekit_default is SAME


def test_range_checks() -> None:
    density = ParamSpec("density", float, scope="model", default=1.0, low=0.0, high=1.0, low_open=True)
    with pytest.raises(ConfigError, match=r"'density' must be in \(0, 1\]"):
        resolve([density], dialect="mergekit", tensor_name="t", t=0, shared_sources=[], model_sources=[[{"density": 0.0}]])
    with pytest.raises(ConfigError, match="density"):
        resolve([density], dialect="mergekit", tensor_name="t", t=0, shared_sources=[], model_sources=[[{"density": 1.5}]])
    ok = resolve([density], dialect="mergekit", tensor_name="t", t=0, shared_sources=[], model_sources=[[{"density": 1}]])
    assert ok.model("density") == [1.0]


def test_casts() -> None:
    b = ParamSpec("flag", bool)
    assert b.cast("true") is True and b.cast(0) is False
    with pytest.raises(ConfigError):
        b.cast("maybe")
    with pytest.raises(ConfigError, match="number"):
        num.cast("abc")
    with pytest.raises(ConfigError, match="finite"):
        num.cast(float("nan"))
    assert ParamSpec("k", int).cast(3.0) == 3
    with pytest.raises(ConfigError, match="integer"):
        ParamSpec("k", int).cast(2.5)
