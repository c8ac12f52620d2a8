"""CMA-ES: generational ask/tell, improvement on a sphere, IPOP restarts, failures, categoricals."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest

from evomerge.errors import ConfigError
from evomerge.strategies.categorical import CategoricalModel
from evomerge.strategies.cmaes import CMAESConfig, CMAESStrategy, default_popsize
from evomerge.types import Candidate, EvalStatus, Evaluation, Objective
from search_spaces.base import CategoricalDim, FloatDim
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    OPERATORS,
    BoxSpace,
    CoefficientSpace,
    DirectSpace,
    MixedSpace,
    drive,
    evaluate,
    make,
    sphere,
)


def cmaes(space: object, **config: object) -> CMAESStrategy:
    strategy = make("cmaes", space, fast=False, **config)  # type: ignore[arg-type]
    assert isinstance(strategy, CMAESStrategy)
    return strategy


def constant(c: Candidate) -> Evaluation:
    return Evaluation(c.uid, EvalStatus.OK, {"score": 1.0})


def test_default_popsize_follows_the_formula() -> None:
    assert [default_popsize(n) for n in (1, 2, 5, 10, 100)] == [4, 6, 8, 10, 17]
    assert cmaes(CoefficientSpace(5)).popsize == 4 + math.floor(3 * math.log(5))


def test_generational_asks_wait_for_the_whole_generation() -> None:
    space = CoefficientSpace(5)
    strategy = cmaes(space)
    first = strategy.ask(100)
    assert len(first) == 8 and strategy.ask(3) == []
    strategy.tell(evaluate(first[:7], sphere(space)))
    assert strategy.ask(3) == []
    strategy.tell(evaluate(first[7:], sphere(space)))
    second = strategy.ask(3)
    assert len(second) == 3 and all(c.generation == 1 for c in second)
    assert len(strategy.ask(100)) == 5


def test_search_starts_at_the_space_start() -> None:
    space = CoefficientSpace(4)
    strategy = cmaes(space, sigma0=1e-6)
    for cand in strategy.ask(8):
        assert cand.genome.vector == pytest.approx(space.start().vector, abs=1e-4)


def test_cmaes_improves_a_sphere() -> None:
    space = CoefficientSpace(5)
    history = drive(cmaes(space), sphere(space, center=0.3), budget=400, batch=8)
    first_generation = max(e.objectives["score"] for _, e in history[:8])
    best = max(e.objectives["score"] for _, e in history)
    assert first_generation < -0.01
    assert best > -1e-4


def test_ipop_restart_doubles_the_population() -> None:
    strategy = cmaes(CoefficientSpace(3), popsize=4, restarts=2)
    history = drive(strategy, constant, budget=500, batch=64)
    sizes = [c.meta["popsize"] for c, _ in history]
    runs = [c.meta["run"] for c, _ in history]
    assert sorted(set(sizes)) == [4, 8, 16]
    assert all(s == 4 * 2**r for s, r in zip(sizes, runs))
    assert strategy.finished and strategy.ask(5) == []


def test_failures_are_ranked_below_every_success() -> None:
    space = CoefficientSpace(3)
    strategy = cmaes(space, popsize=6)
    told: list[tuple[list[np.ndarray], list[float]]] = []
    es_tell = strategy.es.tell  # type: ignore[union-attr]

    def spy(solutions: list[np.ndarray], losses: list[float]) -> None:
        told.append((solutions, list(losses)))
        es_tell(solutions, losses)

    strategy.es.tell = spy  # type: ignore[method-assign, union-attr]
    cands = strategy.ask(6)
    evals = [Evaluation(c.uid, EvalStatus.OK, {"score": -float(i)}) for i, c in enumerate(cands[:4])]
    evals += [Evaluation.failure(c.uid, "oom") for c in cands[4:]]
    strategy.tell(evals)
    losses = told[0][1]
    assert losses[:4] == [0.0, 1.0, 2.0, 3.0]
    assert min(losses[4:]) > 3.0 + 1.0 - 1e-12
    assert losses[4] != losses[5]  # distance to the mean breaks ties between failures


def test_an_all_failed_generation_does_not_stop_the_search() -> None:
    strategy = cmaes(CoefficientSpace(3), popsize=4)
    drive(strategy, lambda c: Evaluation.failure(c.uid, "down"), budget=12)
    assert not strategy.finished and strategy.ask(4)


def test_categorical_choices_learn_the_best_option() -> None:
    space = MixedSpace(groups=2)

    def prefers_last(c: Candidate) -> Evaluation:
        return Evaluation(c.uid, EvalStatus.OK, {"score": float(sum(c.genome.choices))})

    strategy = cmaes(space)
    drive(strategy, prefers_last, budget=200, batch=16)
    assert all(p[2] > 0.8 for p in strategy.cats.probs)


def test_categorical_model_update_and_floor() -> None:
    model = CategoricalModel([3], learning_rate=0.5, floor=0.3)
    model.update([(2,), (2,), (1,), (2,)])
    # (1 − 0.5)·(1/3) + 0.5·(0, 1/4, 3/4), then mixed with 30% of uniform
    moved = np.array([1 / 6, 1 / 6 + 1 / 8, 1 / 6 + 3 / 8])
    assert model.probs[0] == pytest.approx(0.7 * moved + 0.1)
    for _ in range(60):
        model.update([(2,)])
    # fixed point of p0 ← 0.7·0.5·p0 + 0.1: p0 = 0.1 / 0.65, never below the floor 0.3/3
    assert model.probs[0][:2] == pytest.approx([0.1 / 0.65, 0.1 / 0.65])
    assert model.probs[0].sum() == pytest.approx(1.0)


def test_categorical_only_space_runs_without_pycma() -> None:
    strategy = cmaes(BoxSpace([], [CategoricalDim("op", OPERATORS)]))
    assert strategy.es is None
    assert len(drive(strategy, constant, budget=12)) == 12


def test_diagonal_covariance_above_the_threshold() -> None:
    assert cmaes(DirectSpace(30), diagonal_above=20).es.opts["CMA_diagonal"] is True  # type: ignore[union-attr]
    assert cmaes(DirectSpace(10), diagonal_above=20).es.opts["CMA_diagonal"] is not True  # type: ignore[union-attr]
    assert cmaes(DirectSpace(10), diagonal="always").es.opts["CMA_diagonal"] is True  # type: ignore[union-attr]


def test_log_dimensions_are_searched_in_log_space() -> None:
    strategy = cmaes(BoxSpace([FloatDim("lr", 1e-4, 1.0, log=True)]), sigma0=1e-6)
    # start = middle of the unit cube = geometric mean of the bounds
    assert strategy.ask(1)[0].genome.vector[0] == pytest.approx(1e-2, rel=1e-3)


def test_config_validation() -> None:
    for bad in ({"sigma0": 0.0}, {"popsize": 1}, {"restarts": -1}, {"incpopsize": 0.5}):
        with pytest.raises(pydantic.ValidationError):
            CMAESConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one objective"):
        make("cmaes", CoefficientSpace(), BI_OBJECTIVES)
    assert (
        make("cmaes", CoefficientSpace(), [Objective("loss", "minimize")]).objectives[0].direction
        == "minimize"
    )
