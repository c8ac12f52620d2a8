"""Report series: best-so-far curves, per-strategy points, status counts and the Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evomerge.population.archive import Entry
from evomerge.report.series import (
    fitness_series,
    pareto_front,
    running_best,
    status_counts,
    unscored_positions,
)
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective

MAX = Objective("acc", "maximize")
MIN = Objective("loss", "minimize")


def entry(i: int, objectives: dict[str, float] | None = None, *, strategy: str = "s", status: EvalStatus = EvalStatus.OK,
          parents: tuple[str, ...] = (), fidelity: str = "full") -> Entry:
    cand = Candidate(f"c{i}", Genome(np.zeros(1)), None, parents=parents, strategy=strategy)
    ev = Evaluation(cand.uid, status, dict(objectives or {}), fidelity=fidelity)
    return Entry(cand, ev, i)


def test_running_best_by_hand() -> None:
    assert running_best([1.0, 3.0, 2.0, 5.0], MAX).tolist() == [1.0, 3.0, 3.0, 5.0]
    assert running_best([3.0, 1.0, 2.0, 0.5], MIN).tolist() == [3.0, 1.0, 1.0, 0.5]
    out = running_best([math.nan, 2.0, math.nan, 1.0], MIN)
    assert math.isnan(out[0]) and out[1:].tolist() == [2.0, 2.0, 1.0]
    assert running_best([], MAX).size == 0


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.sampled_from([MAX, MIN]))
def test_running_best_is_the_best_prefix_value(values: list[float], objective: Objective) -> None:
    pick = max if objective.direction == "maximize" else min
    expected = [pick(values[: k + 1]) for k in range(len(values))]
    assert running_best(values, objective).tolist() == expected


def test_fitness_series_splits_by_strategy_and_skips_unscored() -> None:
    entries = [
        entry(0, {"acc": 0.2}, strategy="cmaes"),
        entry(1, {"acc": 0.5}, strategy="random"),
        entry(2, status=EvalStatus.FAILED, strategy="cmaes"),
        entry(3, {"acc": 0.4}, strategy="cmaes"),
        entry(4, {"acc": 0.9}, strategy="cmaes", fidelity="subset"),  # a subset score is not a result
    ]
    series = {s.strategy: s for s in fitness_series(entries, MAX)}
    assert list(series) == ["cmaes", "random"]
    assert series["cmaes"].x.tolist() == [1, 4] and series["cmaes"].y.tolist() == [0.2, 0.4]
    assert series["cmaes"].best.tolist() == [0.2, 0.4]
    assert series["random"].x.tolist() == [2]
    assert unscored_positions(entries).tolist() == [3]


def test_status_counts_put_ok_first() -> None:
    entries = [entry(0, status=EvalStatus.TIMEOUT), entry(1, {"acc": 1.0}), entry(2, status=EvalStatus.FAILED),
               entry(3, {"acc": 2.0})]
    assert list(status_counts(entries).items()) == [("ok", 2), ("failed", 1), ("timeout", 1)]


def _dominated(points: np.ndarray, i: int) -> bool:
    return any(np.all(points[j] >= points[i]) and np.any(points[j] > points[i]) for j in range(len(points)))


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_pareto_front_is_exactly_the_non_dominated_points(raw: list[tuple[int, int]]) -> None:
    objectives = [MAX, MIN]
    entries = [entry(i, {"acc": float(a), "loss": float(b)}) for i, (a, b) in enumerate(raw)]
    signed = np.array([[a, -b] for a, b in raw], dtype=float)
    expected = {f"c{i}" for i in range(len(raw)) if not _dominated(signed, i)}
    front = pareto_front(entries, objectives)
    assert {e.candidate.uid for e in front} == expected
    firsts = [e.evaluation.objectives["acc"] for e in front]
    assert firsts == sorted(firsts, reverse=True)  # best first on the first objective


def test_pareto_front_ignores_failures_and_missing_objectives() -> None:
    entries = [entry(0, {"acc": 1.0, "loss": 1.0}), entry(1, status=EvalStatus.FAILED), entry(2, {"acc": 5.0})]
    assert [e.candidate.uid for e in pareto_front(entries, [MAX, MIN])] == ["c0"]
    assert pareto_front([], [MAX, MIN]) == []


@pytest.mark.parametrize("objective", [MAX, MIN])
def test_series_best_follows_direction(objective: Objective) -> None:
    name = objective.name
    entries = [entry(i, {name: v}) for i, v in enumerate([2.0, 1.0, 3.0])]
    (series,) = fitness_series(entries, objective)
    assert series.best.tolist() == ([2.0, 2.0, 3.0] if objective is MAX else [2.0, 1.0, 1.0])
