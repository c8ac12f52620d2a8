"""evaluate_safely: a raising or NaN-returning suite becomes a failed Evaluation carrying the error text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evomerge.types import EvalStatus, Objective
from fitness import FitnessConfig, FitnessResult, FitnessSuite, build_suite, evaluate_safely


class Scripted(FitnessSuite):
    """A suite whose call returns (or raises) whatever the test scripted."""

    name = "scripted"
    Config = FitnessConfig

    def __init__(self, outcome: Any, objectives: tuple[str, ...] = ("score",)) -> None:
        super().__init__(FitnessConfig(name="scripted"))
        self.outcome = outcome
        self.names = objectives

    def objectives(self) -> list[Objective]:
        return [Objective(n) for n in self.names]

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[no-any-return]


def test_ok_result_becomes_an_ok_evaluation() -> None:
    suite = Scripted(FitnessResult({"score": 0.75, "extra": 1.0}, [1, 0, 1], {"n": 3}))
    ev = evaluate_safely(suite, None, None, "c1", evaluator="e0", plan_hash="h")
    assert ev.status is EvalStatus.OK and ev.error is None
    assert ev.objectives == {"score": 0.75}
    np.testing.assert_array_equal(ev.per_example, [1.0, 0.0, 1.0])  # type: ignore[arg-type]
    assert ev.metrics == {"n": 3} and ev.evaluator == "e0" and ev.plan_hash == "h" and ev.fidelity == "full"
    assert ev.seconds >= 0.0


def test_exception_becomes_failed_evaluation_with_error_text() -> None:
    ev = evaluate_safely(Scripted(RuntimeError("CUDA out of memory on layer 3")), None, None, "c2")
    assert ev.status is EvalStatus.FAILED
    assert ev.error == "RuntimeError: CUDA out of memory on layer 3"
    assert "CUDA out of memory" in ev.metrics["traceback"]
    assert ev.uid == "c2" and ev.objectives == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_objective_is_a_failure(value: float) -> None:
    ev = evaluate_safely(Scripted(FitnessResult({"score": value})), None, None, "c3")
    assert ev.status is EvalStatus.FAILED
    assert ev.error is not None and "non-finite objective" in ev.error and "score" in ev.error


def test_nan_per_example_score_is_a_failure() -> None:
    ev = evaluate_safely(Scripted(FitnessResult({"score": 0.5}, [1.0, np.nan, np.nan])), None, None, "c4")
    assert ev.status is EvalStatus.FAILED and ev.error == "2 non-finite per-example score(s)"


def test_missing_objective_and_wrong_type_are_failures() -> None:
    ev = evaluate_safely(Scripted(FitnessResult({"a": 1.0}), ("a", "b")), None, None, "c5")
    assert ev.status is EvalStatus.FAILED and "objective(s): b" in (ev.error or "")
    ev = evaluate_safely(Scripted(0.5), None, None, "c6")  # a bare float is not a FitnessResult
    assert ev.status is EvalStatus.FAILED and "not a FitnessResult" in (ev.error or "")


def test_interrupts_propagate() -> None:
    with pytest.raises(KeyboardInterrupt):
        evaluate_safely(Scripted(KeyboardInterrupt()), None, None, "c7")


def test_callable_suite_returning_nan_fails_through_the_registry(tmp_path: Any) -> None:
    (tmp_path / "score.py").write_text("def nan(model, tokenizer):\n    return float('nan')\n")
    suite = build_suite({"name": "callable", "function": "score.py:nan"}, base_dir=tmp_path)
    ev = evaluate_safely(suite, object(), None, "c8")
    assert ev.status is EvalStatus.FAILED and ev.error == "non-finite objective(s): score=nan"


def test_subset_evaluations_carry_their_fidelity() -> None:
    suite = Scripted(FitnessResult({"score": 1.0}))
    suite.set_fidelity(0.5)
    assert evaluate_safely(suite, None, None, "c9").fidelity == "subset:0.5"
