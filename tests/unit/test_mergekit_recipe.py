"""Writing evomerge plans as mergekit recipes: defaults pinned, inexpressible plans refused with a reason."""

from __future__ import annotations

import yaml

from evomerge.merge.mergekit_recipe import to_mergekit
from evomerge.plan import MergePlan


def plan(**fields: object) -> MergePlan:
    data = {"merge_method": "ties", "base_model": "b", "dialect": "evomerge",
            "models": [{"model": "x", "parameters": {"weight": 0.5}}, {"model": "y", "parameters": {"weight": 0.3}}],
            "parameters": {"trim_scope": "tensor", "zero_sign": "positive"}}
    data.update(fields)
    return MergePlan.model_validate(data)


def recipe(p: MergePlan) -> dict:
    out = to_mergekit(p)
    assert out.yaml is not None, out.reason
    return dict(yaml.safe_load(out.yaml))


def test_evomerge_defaults_that_differ_from_mergekit_are_written_out() -> None:
    data = recipe(plan())
    assert "dialect" not in data
    assert data["parameters"] == {"density": 0.2}  # evomerge's TIES default; mergekit's would be 1.0
    assert data["models"][0]["parameters"] == {"weight": 0.5}


def test_a_conditional_setting_gets_evomerge_default_as_catch_all() -> None:
    p = plan(parameters={"trim_scope": "tensor", "zero_sign": "positive",
                         "density": [{"filter": "mlp", "value": 0.5}]})
    assert recipe(p)["parameters"]["density"] == [{"filter": "mlp", "value": 0.5}, {"value": 0.2}]
    complete = plan(parameters={"trim_scope": "tensor", "zero_sign": "positive", "density": [0.3, 0.6]})
    assert recipe(complete)["parameters"]["density"] == [0.3, 0.6]


def test_mergekit_dialect_plans_pass_through_unchanged() -> None:
    p = MergePlan.model_validate({"merge_method": "linear", "models": [
        {"model": "x", "parameters": {"weight": 1.0}}, {"model": "y", "parameters": {"weight": 2.0}}]})
    assert recipe(p) == p.to_dict(mergekit=True)


def test_inexpressible_plans_say_why() -> None:
    assert "does not exist in mergekit" in to_mergekit(plan(merge_method="consensus")).reason
    assert "trim_scope='global'" in to_mergekit(plan(parameters={"trim_scope": "global"})).reason
    assert "zero_sign='majority'" in to_mergekit(plan(parameters={"trim_scope": "tensor"})).reason
    overrides = plan(overrides=[{"filter": "mlp", "merge_method": "linear"}])
    assert "overrides" in to_mergekit(overrides).reason
    dare = plan(merge_method="dare_ties", parameters={})  # evomerge rescales by the keep probability, mergekit by L1
    assert "rescale_mode='keep_probability'" in to_mergekit(dare).reason


def test_randomized_methods_come_with_a_caveat() -> None:
    out = to_mergekit(plan(merge_method="dare_ties", parameters={"rescale_mode": "l1"}))
    assert out.yaml is not None and "own masks" in out.reason and out.yaml.startswith("# mergekit recipe")
    data = yaml.safe_load(out.yaml)
    assert data["parameters"]["density"] == 0.1 and data["parameters"]["normalize"] is True
