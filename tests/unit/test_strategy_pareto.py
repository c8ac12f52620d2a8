"""Pareto utilities, the surrogate front solver, and the acceptance check on a front known in closed form.

Acceptance: on a two-objective toy problem whose Pareto set is the segment a→b, the fronts returned by
``optuna`` (NSGA-II), ``layerwise_zo`` (multi-objective) and ``map_pareto`` have a hypervolume within 10%
of the true front's, at a budget of 150 evaluations each (MAP needs only its design plus one round of
proposals, 30 evaluations, and stops there).
"""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.strategies.pareto import FrontPoint, front_hypervolume, front_of, hypervolume, non_dominated
from evomerge.strategies.surrogate_front import SurrogateProblem, polish, surrogate_front
from evomerge.types import Genome, Objective
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    CoefficientSpace,
    biobjective,
    drive,
    make,
    true_front_hypervolume,
)

A, B = np.array([0.2, 0.3, 0.25]), np.array([0.8, 0.6, 0.7])
LENGTH_SQ = float(np.sum((B - A) ** 2))
REF = 1.2 * LENGTH_SQ  # loss-space reference point (REF, REF): a little beyond both ends of the front
BUDGET = 150
PARETO_STRATEGIES = {
    "optuna": {"sampler": "nsga2", "population_size": 20},  # NSGA-II's default 50 suits thousands of trials
    "layerwise_zo": {},
    "map_pareto": {},
}


def test_non_dominated_keeps_ties_and_drops_dominated_rows() -> None:
    scores = np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.0, 2.0], [2.0, -1.0]])
    assert non_dominated(scores).tolist() == [True, True, False, True, True, False]
    assert non_dominated(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError):
        non_dominated(np.zeros(3))


def test_hypervolume_by_hand() -> None:
    # losses (1,3), (2,2), (3,1) against (4,4): strips of 1·1 + 1·2 + 1·3
    signed = -np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(signed, [-4.0, -4.0]) == pytest.approx(6.0)
    # a point beyond the reference adds nothing; no point gives zero
    assert hypervolume(np.vstack([signed, [[-5.0, 0.0]]]), [-4.0, -4.0]) == pytest.approx(6.0)
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0


def test_front_helpers_respect_directions() -> None:
    objectives = [Objective("loss", "minimize"), Objective("acc", "maximize")]
    points = [
        FrontPoint(Genome(np.zeros(1)), {"loss": loss, "acc": acc}, f"u{i}")
        for i, (loss, acc) in enumerate([(1.0, 0.5), (2.0, 0.9), (2.0, 0.4)])
    ]
    assert [p.uid for p in front_of(points, objectives)] == ["u0", "u1"]
    # reference (loss 3, acc 0): u0 covers 2 × 0.5, u1 adds 1 × (0.9 − 0.5)
    assert front_hypervolume(points, objectives, [3.0, 0.0]) == pytest.approx(2 * 0.5 + 1 * 0.4)


def test_closed_form_front_hypervolume_matches_a_dense_sample() -> None:
    t = np.linspace(0.0, 1.0, 20001)
    losses = np.stack([t**2 * LENGTH_SQ, (1 - t) ** 2 * LENGTH_SQ], axis=1)
    dense = hypervolume(-losses, [-REF, -REF])
    assert true_front_hypervolume(LENGTH_SQ, REF) == pytest.approx(dense, rel=1e-4)
    with pytest.raises(ValueError):
        true_front_hypervolume(LENGTH_SQ, 0.5 * LENGTH_SQ)


def quadratic_pair() -> SurrogateProblem:
    return SurrogateProblem(
        predict=lambda u, c: np.array([-np.sum((u - A) ** 2), -np.sum((u - B) ** 2)]),
        dimension=3,
        n_choices=[],
        n_objectives=2,
    )


def test_polish_moves_a_point_onto_the_pareto_set_without_losing_ground() -> None:
    problem = quadratic_pair()
    start = (np.array([0.9, 0.1, 0.2]), ())
    before = problem.predict(*start)
    (moved, _), after = polish(problem, start, utopia=np.array([0.01, 0.01]))
    assert np.all(after >= before)
    direction = (B - A) / np.linalg.norm(B - A)
    offset = moved - A
    assert np.linalg.norm(offset - np.dot(offset, direction) * direction) < 1e-4


def test_surrogate_front_is_non_dominated_and_on_the_segment() -> None:
    front = surrogate_front(quadratic_pair(), seeds=[], seed=0, trials=200, population=20)
    values = np.stack([v for _, v in front])
    assert non_dominated(values).all() and len(front) >= 10
    assert np.all(np.diff(values[:, 0]) >= 0)  # sorted by the first objective


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(PARETO_STRATEGIES))
def test_fronts_reach_90_percent_of_the_true_hypervolume(name: str, seed: int) -> None:
    strategy = make(
        name, CoefficientSpace(3), BI_OBJECTIVES, seed=seed, fast=False, **PARETO_STRATEGIES[name]
    )
    history = drive(strategy, biobjective(A, B), budget=BUDGET, batch=8)
    assert len(history) <= BUDGET
    front = strategy.pareto_front()  # type: ignore[attr-defined]
    ratio = front_hypervolume(front, BI_OBJECTIVES, [REF, -REF]) / true_front_hypervolume(LENGTH_SQ, REF)
    assert 0.9 <= ratio <= 1.0 + 1e-9
