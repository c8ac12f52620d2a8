"""MergePlan: mergekit YAML loads unchanged; bad input names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.errors import ConfigError
from evomerge.plan import MergePlan

MERGEKIT_TIES = """
models:
  - model: ./a
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: ./b
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
merge_method: ties
base_model: ./base
parameters:
  normalize: true
  int8_mask: true
  weight:
    - filter: mlp
      value: 0.5
    - value: 1
dtype: float16
tokenizer:
  source: base
"""


def test_mergekit_recipe_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MERGEKIT_TIES)
    plan = MergePlan.from_yaml(path)
    assert plan.merge_method == "ties" and plan.dialect == "mergekit"
    assert plan.source_models() == ["./base", "./a", "./b"]
    assert plan.dtype == "float16"
    assert plan.tokenizer_choice() == "base"
    again = MergePlan.from_dict(plan.to_dict())
    assert again == plan and again.content_hash() == plan.content_hash()


def test_hash_changes_with_content() -> None:
    a = MergePlan.from_dict({"merge_method": "linear", "models": [{"model": "x", "parameters": {"weight": 1}}]})
    b = MergePlan.from_dict({"merge_method": "linear", "models": [{"model": "x", "parameters": {"weight": 2}}]})
    assert a.content_hash() != b.content_hash()


def test_mergekit_export_drops_extensions() -> None:
    plan = MergePlan.from_dict({"merge_method": "ties", "base_model": "b", "models": [{"model": "x"}], "dialect": "evomerge"})
    assert "dialect" not in plan.to_dict(mergekit=True)
    assert plan.to_dict()["dialect"] == "evomerge"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"merge_method": "ties", "models": [{"model": "x"}], "typo_key": 1}, "unknown key 'typo_key'"),
        ({"merge_method": "ties", "models": [{"model": "x", "paramters": {}}]}, "models.0: unknown key .paramters."),
        ({"merge_method": "ties"}, "exactly one of 'models' or 'slices'"),
        ({"merge_method": "ties", "models": [{"model": "x"}], "dtype": "float8"}, "dtype"),
        ({"merge_method": "passthrough", "slices": [{"sources": [{"model": "x", "layer_range": [3, 1]}]}]}, "layer_range"),
    ],
)
def test_bad_recipes_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MergePlan.from_dict(data, source="r.yaml")


def test_yaml_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        MergePlan.from_yaml(bad)
    with pytest.raises(ConfigError, match="file not found"):
        MergePlan.from_yaml(tmp_path / "missing.yaml")
