"""MAP: quadratic surrogates, the design, and the predicted front against the known one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.strategies.map_pareto import MAPStrategy
from evomerge.strategies.quadratic import QuadraticSurrogate, n_features, quadratic_features
from evomerge.types import Evaluation
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    CoefficientSpace,
    biobjective,
    drive,
    evaluate,
    make,
    sphere,
)

A, B = np.array([0.2, 0.3, 0.25]), np.array([0.8, 0.6, 0.7])


def map_strategy(
    space: object, objectives: object = None, fast: bool = False, **config: object
) -> MAPStrategy:
    args = {} if objectives is None else {"objectives": objectives}
    strategy = make("map_pareto", space, fast=fast, **args, **config)  # type: ignore[arg-type]
    assert isinstance(strategy, MAPStrategy)
    return strategy


def test_quadratic_features_by_hand() -> None:
    assert quadratic_features(np.array([[2.0, 3.0]])) == pytest.approx(np.array([[1, 2, 3, 4, 6, 9]]))
    assert [n_features(d) for d in (1, 2, 3, 10)] == [3, 6, 10, 66]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_fit_recovers_an_exact_quadratic(dimension: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_features(dimension), 2))
    x = rng.random((3 * n_features(dimension), dimension))
    surrogate = QuadraticSurrogate.fit(x, quadratic_features(x) @ coef)
    new = rng.random((5, dimension))
    assert surrogate.predict(new) == pytest.approx(quadratic_features(new) @ coef, abs=1e-6)


def test_design_holds_start_sources_and_a_latin_hypercube() -> None:
    space = CoefficientSpace(3)
    strategy = map_strategy(space)
    assert strategy.n_design == 2 * n_features(3)
    design = strategy.ask(100)
    assert len(design) == 20
    assert [c.genome for c in design[:4]] == [space.start(), *space.initial_points()]
    lhs = np.stack([c.genome.vector for c in design[4:]])
    for column in lhs.T:  # one point per stratum in every dimension
        assert sorted(np.floor(column * 16).astype(int)) == list(range(16))


def test_rounds_of_proposals_then_finished() -> None:
    space = CoefficientSpace(3)
    strategy = map_strategy(space, BI_OBJECTIVES, n_proposals=4, rounds=2, surrogate_trials=200)
    fn = biobjective(A, B)
    design = strategy.ask(100)
    assert strategy.ask(1) == []  # waiting for the design
    strategy.tell(evaluate(design, fn))
    first = strategy.ask(100)
    assert len(first) == 4 and all(c.meta["round"] == 1 for c in first)
    assert strategy.predicted_front() and all(p.uid is None for p in strategy.predicted_front())
    strategy.tell(evaluate(first, fn))
    second = strategy.ask(100)
    assert 1 <= len(second) <= 4 and all(c.meta["round"] == 2 for c in second)
    assert not strategy.finished
    strategy.tell(evaluate(second, fn))
    assert strategy.finished and strategy.ask(5) == []


def test_predicted_front_lies_on_the_true_pareto_set() -> None:
    strategy = map_strategy(CoefficientSpace(3), BI_OBJECTIVES, surrogate_trials=600)
    fn = biobjective(A, B)
    strategy.tell(evaluate(strategy.ask(100), fn))
    predicted = strategy.predicted_front()
    assert len(predicted) >= 10
    direction = (B - A) / np.linalg.norm(B - A)
    for point in predicted:  # distance from the segment A→B
        x = point.genome.vector
        t = np.clip(np.dot(x - A, direction), 0, np.linalg.norm(B - A))
        assert np.linalg.norm(x - (A + t * direction)) < 1e-3
        truth = {"loss_a": float(np.sum((x - A) ** 2)), "score_b": -float(np.sum((x - B) ** 2))}
        assert point.values == pytest.approx(truth, abs=1e-6)  # the objectives are exactly quadratic


def test_single_objective_proposes_the_surrogate_optimum() -> None:
    space = CoefficientSpace(3)
    strategy = map_strategy(space, n_proposals=3, surrogate_trials=400)
    strategy.tell(evaluate(strategy.ask(100), sphere(space, center=[0.6, 0.2, 0.4])))
    proposals = strategy.ask(10)
    assert len(proposals) == 3
    for cand in proposals:
        assert cand.genome.vector == pytest.approx([0.6, 0.2, 0.4], abs=0.08)


def test_a_failed_design_is_drawn_again() -> None:
    strategy = map_strategy(CoefficientSpace(3), n_design=6)
    first = strategy.ask(10)
    strategy.tell([Evaluation.failure(c.uid, "down") for c in first])
    again = strategy.ask(10)
    assert len(again) == 6 and all(c.meta["round"] == 0 for c in again)
    assert {c.genome for c in again}.isdisjoint({c.genome for c in first})


def test_pareto_front_keeps_only_evaluated_non_dominated_points() -> None:
    strategy = map_strategy(CoefficientSpace(3), BI_OBJECTIVES, surrogate_trials=100)
    history = drive(strategy, biobjective(A, B), budget=100)
    front = strategy.pareto_front()
    assert front and all(p.uid is not None for p in front)
    signed = np.array([[-e.objectives["loss_a"], e.objectives["score_b"]] for _, e in history])
    for p in front:
        mine = np.array([-p.values["loss_a"], p.values["score_b"]])
        assert not np.any(np.all(signed >= mine, axis=1) & np.any(signed > mine, axis=1))
