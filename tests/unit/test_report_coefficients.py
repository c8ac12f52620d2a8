"""Coefficient tables read from compiled plans: gradients, role filters, per-layer overrides, fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evomerge.merge.planner import SourceInfo
from evomerge.plan import MergePlan
from evomerge.report.coefficients import (
    SHARED,
    coefficients,
    plan_coefficients,
    scalar_coefficients,
    searched_parameters,
    short_names,
)


def llama_info(ref: str, layers: int = 3) -> SourceInfo:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (10, 4)}
    for i in range(layers):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = (4, 4)
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = (8, 4)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (4,)
    shapes["model.norm.weight"] = (4,)
    shapes["lm_head.weight"] = (10, 4)
    return SourceInfo(ref, shapes, {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers})


INFOS = {ref: llama_info(ref) for ref in ("/m/base", "/m/a", "/m/b")}
COLUMNS = ["embed", "0", "1", "2", "head"]


def plan(models: list[dict], **extra: object) -> MergePlan:
    return MergePlan.from_dict({"merge_method": "task_arithmetic", "base_model": "/m/base", "models": models, **extra})


def test_gradient_is_read_per_layer_with_embed_and_head_at_depth_zero() -> None:
    (table,) = plan_coefficients(plan([{"model": "/m/a", "parameters": {"weight": [0.0, 1.0]}},
                                       {"model": "/m/b", "parameters": {"weight": 0.25}}]), INFOS)
    assert table.parameter == "weight" and table.rows == ["a", "b"] and table.columns == COLUMNS
    # mergekit depth: t = layer / (n - 1) inside the layers, 0 outside them
    assert table.values.tolist() == [[0.0, 0.0, 0.5, 1.0, 0.0], [0.25] * 5]
    assert table.per_layer


def test_role_filters_split_rows_by_role_when_they_differ() -> None:
    weight = [{"filter": ".self_attn.", "value": 0.2}, {"filter": ".mlp.", "value": 0.8}, {"value": 0.5}]
    (table,) = plan_coefficients(plan([{"model": "/m/a", "parameters": {"weight": weight}},
                                       {"model": "/m/b", "parameters": {"weight": 1.0}}]), INFOS)
    assert table.rows == ["a · attn", "a · mlp", "a · other", "b · attn", "b · mlp", "b · other"]
    nan = math.nan
    expected = [[nan, 0.2, 0.2, 0.2, nan], [nan, 0.8, 0.8, 0.8, nan], [0.5] * 5,
                [nan, 1.0, 1.0, 1.0, nan], [nan, 1.0, 1.0, 1.0, nan], [1.0] * 5]
    np.testing.assert_array_equal(table.values, np.array(expected))


def test_per_layer_overrides_and_shared_parameters() -> None:
    p = plan([{"model": "/m/a", "parameters": {"weight": 0.5}}, {"model": "/m/b", "parameters": {"weight": 0.5}}],
             overrides=[{"merge_method": "task_arithmetic", "layers": [1, 3], "models": {"/m/a": {"weight": 0.9}}}],
             parameters={"lambda": 2.0})
    tables = {t.parameter: t for t in plan_coefficients(p, INFOS)}
    assert list(tables) == ["weight", "lambda"]
    assert tables["weight"].values.tolist() == [[0.5, 0.5, 0.9, 0.9, 0.5], [0.5] * 5]
    assert tables["lambda"].rows == [SHARED] and tables["lambda"].values.tolist() == [[2.0] * 5]
    assert not tables["lambda"].per_layer


def test_operator_defaults_that_the_recipe_does_not_set_are_left_out() -> None:
    p = MergePlan.from_dict({"merge_method": "linear", "models": [
        {"model": "/m/a", "parameters": {"weight": 1.0}}, {"model": "/m/b", "parameters": {"weight": 3.0}}]})
    assert searched_parameters(p) == ["weight"]
    (table,) = plan_coefficients(p, INFOS)  # linear's `normalize` is never shown
    assert table.rows == ["a", "b"] and not table.per_layer


def test_scalar_fallback_and_coefficients_choice() -> None:
    p = plan([{"model": "/m/a", "parameters": {"weight": [0.0, 1.0]}}, {"model": "/m/b", "parameters": {"weight": 0.25}}],
             parameters={"lambda": 0.7})
    tables = {t.parameter: t for t in scalar_coefficients(p)}
    assert tables["weight"].rows == ["b"] and tables["weight"].values.tolist() == [[0.25]]  # gradients need depth
    assert tables["lambda"].rows == [SHARED] and tables["lambda"].values.tolist() == [[0.7]]
    assert coefficients(p, None)[1] is False
    assert coefficients(p, {"/m/a": INFOS["/m/a"]})[1] is False  # a source without headers
    exact, is_exact = coefficients(p, INFOS)
    assert is_exact and exact[0].columns == COLUMNS


@pytest.mark.parametrize(
    ("refs", "labels"),
    [
        (["/x/ft1", "/x/ft2"], ["ft1", "ft2"]),
        (["/x/a/model", "/y/b/model"], ["a/model", "b/model"]),
        (["/same/m", "/same/m"], ["m", "m"]),
    ],
)
def test_short_names(refs: list[str], labels: list[str]) -> None:
    assert [short_names(refs)[r] for r in refs] == labels
