"""callable suites (user functions) and composites (weighted or Pareto), with hand-computed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evomerge.errors import ConfigError
from fitness import FitnessResult, build_suite, suite_config

USER_CODE = '''
import numpy as np
from fitness import FitnessResult

def constant(model, tokenizer, value=0.25):
    return value

def pair(model, tokenizer):
    return {"quality": model["q"], "cost": model["c"]}

def detailed(model, tokenizer):
    return FitnessResult({"quality": model["q"], "cost": model["c"]}, np.array([1.0, 0.0, 1.0]), {"k": 1})

def with_fidelity(model, tokenizer, fidelity=None):
    return {"score": 1.0 if fidelity is None else fidelity}

def undeclared(model, tokenizer):
    return {"score": 1.0, "surprise": 2.0}

def text(model, tokenizer):
    return "high"
'''


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "user_scores.py").write_text(USER_CODE)
    return tmp_path


def call(cfg: dict[str, Any], base: Path, model: Any = None) -> FitnessResult:
    return build_suite(cfg, base_dir=base)(model, None)


def test_float_dict_and_result_returns(user_dir: Path) -> None:
    assert call({"name": "callable", "function": "user_scores.py:constant"}, user_dir).objectives == {"score": 0.25}
    kw = {"name": "callable", "function": "user_scores.py:constant", "kwargs": {"value": 3}, "objectives": {"v": "minimize"}}
    suite = build_suite(kw, base_dir=user_dir)
    assert suite(None, None).objectives == {"v": 3.0}
    assert [(o.name, o.direction) for o in suite.objectives()] == [("v", "minimize")]
    both = {"quality": "maximize", "cost": "minimize"}
    model = {"q": 0.9, "c": 2.0}
    assert call({"name": "callable", "function": "user_scores.py:pair", "objectives": both}, user_dir, model).objectives == {
        "quality": 0.9,
        "cost": 2.0,
    }
    rich = call({"name": "callable", "function": "user_scores.py:detailed", "objectives": both}, user_dir, model)
    np.testing.assert_array_equal(rich.per_example, [1.0, 0.0, 1.0])  # type: ignore[arg-type]


def test_fidelity_is_passed_only_to_functions_that_take_it(user_dir: Path) -> None:
    suite = build_suite({"name": "callable", "function": "user_scores.py:with_fidelity"}, base_dir=user_dir)
    assert suite.supports_fidelity
    suite.set_fidelity(0.5)
    assert suite(None, None).objectives == {"score": 0.5}
    plain = build_suite({"name": "callable", "function": "user_scores.py:constant"}, base_dir=user_dir)
    assert not plain.supports_fidelity
    with pytest.warns(UserWarning, match="cannot score a subset"):
        plain.set_fidelity(0.5)
    assert plain.fidelity is None


def test_bad_returns_raise_clear_errors(user_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"undeclared objective\(s\) \['surprise'\]"):
        call({"name": "callable", "function": "user_scores.py:undeclared"}, user_dir)
    with pytest.raises(TypeError, match="must return numbers, got str"):
        call({"name": "callable", "function": "user_scores.py:text"}, user_dir)
    two = {"name": "callable", "function": "user_scores.py:constant", "objectives": {"a": "maximize", "b": "maximize"}}
    with pytest.raises(ValueError, match="one number but 2 objectives"):
        call(two, user_dir)


def test_unimportable_functions_are_config_errors(user_dir: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        build_suite({"name": "callable", "function": "missing.py:f"}, base_dir=user_dir)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        build_suite({"name": "callable", "function": "user_scores.py:nope"}, base_dir=user_dir)
    with pytest.raises(ConfigError, match="cannot import"):
        build_suite({"name": "callable", "function": "no_such_module_xyz:f"}, base_dir=user_dir)


def composite(user_dir: Path, mode: str) -> Any:
    both = {"quality": "maximize", "cost": "minimize"}
    return build_suite(
        {
            "name": "composite",
            "mode": mode,
            "suites": [
                {"name": "callable", "label": "a", "function": "user_scores.py:detailed", "objectives": both, "weight": 2.0},
                {"name": "callable", "label": "b", "function": "user_scores.py:constant", "weight": 0.5},
                {"name": "callable", "label": "c", "function": "user_scores.py:detailed", "objectives": both},
            ],
        },
        base_dir=user_dir,
    )


def test_weighted_composite_sums_signed_weighted_objectives(user_dir: Path) -> None:
    suite = composite(user_dir, "weighted")
    result = suite({"q": 0.75, "c": 3.0}, None)
    expected = 2.0 * (0.75 - 3.0) + 0.5 * 0.25 + 1.0 * (0.75 - 3.0)
    assert [o.name for o in suite.objectives()] == ["fitness"]
    assert result.objectives == {"fitness": pytest.approx(expected)}
    assert result.metrics["a/quality"] == 0.75 and result.metrics["b/score"] == 0.25
    np.testing.assert_array_equal(result.per_example, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # type: ignore[arg-type]
    assert result.metrics["per_example_slices"] == {"a": [0, 3], "c": [3, 6]}


def test_pareto_composite_keeps_named_objectives_with_directions(user_dir: Path) -> None:
    suite = composite(user_dir, "pareto")
    assert [(o.name, o.direction) for o in suite.objectives()] == [
        ("a/quality", "maximize"),
        ("a/cost", "minimize"),
        ("b/score", "maximize"),
        ("c/quality", "maximize"),
        ("c/cost", "minimize"),
    ]
    result = suite({"q": 0.5, "c": 1.0}, None)
    assert result.objectives == {"a/quality": 0.5, "a/cost": 1.0, "b/score": 0.25, "c/quality": 0.5, "c/cost": 1.0}


def test_composite_config_errors_name_the_child(user_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"suites\.1\.name: unknown fitness suite 'nope'"):
        suite_config({"name": "composite", "suites": [{"name": "accuracy"}, {"name": "nope"}]})
    with pytest.raises(ConfigError, match="two suites are labelled 'accuracy'"):
        suite_config({"name": "composite", "suites": [{"name": "accuracy"}, {"name": "accuracy", "dataset": "mnist"}]})
    with pytest.raises(ConfigError, match="unknown accuracy suite option 'datset'"):
        suite_config({"name": "composite", "suites": [{"name": "accuracy", "datset": "mnist"}]})


def test_composite_passes_fidelity_to_children_that_support_it(user_dir: Path) -> None:
    suite = build_suite(
        {
            "name": "composite",
            "suites": [
                {"name": "accuracy", "dataset": "digits"},
                {"name": "callable", "function": "user_scores.py:with_fidelity"},
            ],
        },
        base_dir=user_dir,
    )
    suite.set_fidelity(0.2)
    assert all(child.fidelity == 0.2 for child in suite.children)  # type: ignore[attr-defined]
    suite.set_fidelity(None)
    assert all(child.fidelity is None for child in suite.children)  # type: ignore[attr-defined]


def test_composite_config_round_trips_to_yaml_mapping() -> None:
    cfg = suite_config({"name": "composite", "suites": [{"name": "accuracy", "dataset": "mnist", "weight": 0.5}]})
    dumped = cfg.model_dump()
    assert dumped["suites"][0]["dataset"] == "mnist" and dumped["suites"][0]["weight"] == 0.5
    assert suite_config(dumped) == cfg
