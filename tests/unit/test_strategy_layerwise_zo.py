"""Layer-wise zero-order search: warm start, local moves on layer windows, step-size adaptation, fronts."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from evomerge.strategies.layerwise_zo import GROW, SHRINK, LayerwiseZOStrategy
from evomerge.strategies.pareto import FrontPoint, front_of
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    CoefficientSpace,
    MixedSpace,
    biobjective,
    drive,
    make,
    sphere,
)


def zo(space: object, objectives: object = None, **config: object) -> LayerwiseZOStrategy:
    args = {} if objectives is None else {"objectives": objectives}
    strategy = make("layerwise_zo", space, **args, **config)  # type: ignore[arg-type]
    assert isinstance(strategy, LayerwiseZOStrategy)
    return strategy


def test_warm_start_is_the_uniform_merge_then_each_source() -> None:
    space = CoefficientSpace(3)
    first = zo(space).ask(5)
    assert [c.genome for c in first[:4]] == [space.start(), *space.initial_points()]
    assert [c.meta["kind"] for c in first] == ["warm"] * 4 + ["model"]
    assert [c.genome for c in zo(space, warm_start=False).ask(1)] != [space.start()]


def test_local_moves_happen_at_the_configured_rate() -> None:
    space = CoefficientSpace(4)
    kinds = [c.meta["kind"] for c, _ in drive(zo(space, local_fraction=0.5), sphere(space), budget=85)]
    after_warm = kinds[5:]
    assert abs(after_warm.count("local") / len(after_warm) - 0.5) < 0.15
    none = [c.meta["kind"] for c, _ in drive(zo(space, local_fraction=0.0), sphere(space), budget=30)]
    assert "local" not in none


def test_a_local_move_changes_one_window_of_adjacent_coordinates() -> None:
    space = CoefficientSpace(8)
    strategy = zo(space, window=0.25, cat_flip_prob=0.0)
    base = space.start()
    for _ in range(20):
        moved = strategy._local_move([base])
        changed = np.flatnonzero(moved.vector != base.vector)
        assert 1 <= changed.size <= 2
        assert changed.max() - changed.min() == changed.size - 1  # contiguous


def test_a_local_move_switches_at_most_one_operator() -> None:
    space = MixedSpace(groups=3)
    strategy = zo(space, cat_flip_prob=1.0)
    base = space.start()
    for _ in range(20):
        moved = strategy._local_move([base])
        assert sum(a != b for a, b in zip(moved.choices, base.choices)) == 1


def test_relinking_stays_on_the_line_through_two_front_members() -> None:
    space = MixedSpace(groups=2)
    strategy = zo(space)
    a = Genome(np.array([0.4, 0.3, 0.5, 0.2]), (0, 1))
    b = Genome(np.array([0.6, 0.5, 0.4, 0.6]), (2, 2))
    ua, ub = strategy.cube.to_unit(a.vector), strategy.cube.to_unit(b.vector)
    for _ in range(20):
        child = strategy._relink([a, b])
        w = (strategy.cube.to_unit(child.vector) - ua) / (ub - ua)
        assert np.allclose(w, w[0]) and -0.25 <= w[0] <= 1.25
        assert all(c in (x, y) for c, x, y in zip(child.choices, a.choices, b.choices))


def test_the_random_startup_follows_the_warm_start() -> None:
    space = CoefficientSpace(3)
    assert zo(space, n_startup_trials=7).driver.study.sampler._n_startup_trials == 7 + 4


def test_step_size_follows_the_one_fifth_rule() -> None:
    space = CoefficientSpace(3)
    strategy = zo(space, warm_start=False, local_fraction=0.99, n_startup_trials=1)
    seed = strategy.ask(1)[0]
    strategy.tell([Evaluation(seed.uid, EvalStatus.OK, {"score": 0.0})])
    scale = strategy.scale
    value = 1.0
    while True:  # a local proposal that becomes the best grows the step
        cand = strategy.ask(1)[0]
        strategy.tell([Evaluation(cand.uid, EvalStatus.OK, {"score": value})])
        value += 1.0
        if cand.meta["kind"] == "local":
            break
    assert strategy.scale == pytest.approx(min(0.5, scale * GROW))
    scale = strategy.scale
    while True:  # a worse one shrinks it
        cand = strategy.ask(1)[0]
        strategy.tell([Evaluation(cand.uid, EvalStatus.OK, {"score": -100.0})])
        if cand.meta["kind"] == "local":
            break
    assert strategy.scale == pytest.approx(scale * SHRINK)
    assert math.isclose(GROW**1 * SHRINK**4, 1.0)


def test_single_objective_improves_on_the_warm_start() -> None:
    space = CoefficientSpace(5)
    strategy = zo(space)
    history = drive(strategy, sphere(space, center=[0.7, 0.1, 0.5, 0.9, 0.3]), budget=80)
    warm = max(e.objectives["score"] for c, e in history if c.meta["kind"] == "warm")
    best = max(e.objectives["score"] for _, e in history)
    assert warm < -0.8 and best > -0.1
    assert [p.values["score"] for p in strategy.pareto_front()] == [best]


def test_multi_objective_front_is_the_non_dominated_evaluated_set() -> None:
    strategy = zo(CoefficientSpace(3), BI_OBJECTIVES)
    assert isinstance(strategy.driver.study.sampler, optuna.samplers.NSGAIISampler)
    history = drive(strategy, biobjective([0.1, 0.2, 0.3], [0.8, 0.6, 0.4]), budget=40)
    points = [FrontPoint(c.genome, e.objectives, c.uid) for c, e in history]
    assert {p.uid for p in strategy.pareto_front()} == {p.uid for p in front_of(points, BI_OBJECTIVES)}


def test_local_moves_use_pareto_members_as_incumbents() -> None:
    space = CoefficientSpace(3)
    strategy = zo(space, BI_OBJECTIVES, local_fraction=0.9, local_scale=1e-3, local_scale_min=1e-4)
    fn = biobjective([0.1, 0.2, 0.3], [0.8, 0.6, 0.4])
    history: list[tuple[Candidate, Evaluation]] = drive(strategy, fn, budget=12)
    front = [p.genome.vector for p in strategy.pareto_front()]
    local = [c for c in strategy.ask(10) if c.meta["kind"] == "local"]
    assert local and history
    for cand in local:  # a tiny step from some front member
        assert min(np.abs(cand.genome.vector - f).max() for f in front) < 0.02


def test_motpe_can_drive_the_multi_objective_regime() -> None:
    strategy = zo(CoefficientSpace(3), BI_OBJECTIVES, sampler="tpe")
    assert isinstance(strategy.driver.study.sampler, optuna.samplers.TPESampler)
    assert len(drive(strategy, biobjective([0.1, 0.2, 0.3], [0.8, 0.6, 0.4]), budget=20)) == 20
