"""M2N2: competition, attraction and crossover math on hand-computed cases, and the strategy around them."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from evomerge.strategies import niches
from evomerge.strategies.m2n2 import M2N2Strategy
from evomerge.types import Candidate, EvalStatus, Evaluation, Objective
from tests.unit.strategy_toys import (
    CoefficientSpace,
    DirectSpace,
    classifier_data,
    drive,
    make,
    per_example_accuracy,
)

ACC = [Objective("accuracy")]
S = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], dtype=float)


# ---------------------------------------------------------------------- competition
def test_fitness_shares_each_resource_among_its_solvers() -> None:
    # z = (2, 1, 2): point 0 is split two ways, point 1 belongs to member 1 alone, point 2 is split.
    assert niches.competition_fitness(S, alpha=1.0) == pytest.approx([1.0, 1.5, 0.5])
    assert niches.competition_fitness(S, alpha=0.0) == pytest.approx([2.0, 2.0, 1.0])
    # α = 0.5: divide by sqrt(z)
    r2 = 1 / np.sqrt(2)
    assert niches.competition_fitness(S, alpha=0.5) == pytest.approx([2 * r2, r2 + 1, r2])


def test_capacity_weights_resources_and_unsolved_points_give_nothing() -> None:
    scores = np.array([[1, 0, 0], [1, 1, 0]], dtype=float)  # nobody solves point 2
    assert niches.competition_fitness(scores, 1.0, np.array([4.0, 1.0, 7.0])) == pytest.approx([2.0, 3.0])


def test_attraction_rewards_strength_where_the_parent_is_weak() -> None:
    shared = niches.shared_scores(S, alpha=1.0)
    # parent 0 is weak on point 1 only, which member 1 alone solves
    assert niches.attraction(shared, 0) == pytest.approx([0.0, 1.0, 0.0])
    # parent 2 is weak on points 0 and 1; member 1 gains 0.5 + 1, member 0 gains 0.5
    assert niches.attraction(shared, 2) == pytest.approx([0.5, 1.5, 0.0])


def test_matchmaker_picks_complements_and_its_ablation_does_not() -> None:
    shared = niches.shared_scores(S, alpha=1.0)
    rng = np.random.default_rng(0)
    pairs = [niches.sample_parents(rng, shared, use_matchmaker=True) for _ in range(400)]
    partners_of_0 = {b for a, b in pairs if a == 0}
    assert partners_of_0 == {1}
    rng = np.random.default_rng(0)
    pairs = [niches.sample_parents(rng, shared, use_matchmaker=False) for _ in range(400)]
    assert {b for a, b in pairs if a == 0} == {0, 1, 2}


def test_parent_a_is_drawn_in_proportion_to_fitness() -> None:
    shared = niches.shared_scores(S, alpha=1.0)
    rng = np.random.default_rng(1)
    firsts = np.array([niches.sample_parents(rng, shared, True)[0] for _ in range(3000)])
    freq = np.bincount(firsts, minlength=3) / firsts.size
    assert freq == pytest.approx([1.0 / 3.0, 0.5, 1.0 / 6.0], abs=0.03)


def test_proportional_falls_back_to_uniform() -> None:
    assert niches.proportional(np.zeros(4)) == pytest.approx([0.25] * 4)


# ---------------------------------------------------------------------- crossover
def test_split_point_weights() -> None:
    assert niches.mixing_weights(5, 0.3, 2) == pytest.approx([0.3, 0.3, 0.7, 0.7, 0.7])
    assert niches.mixing_weights(3, 0.3, None) == pytest.approx([0.3, 0.3, 0.3])


def test_linear_crossover_at_a_known_split_point() -> None:
    a, b = np.zeros(5), np.full(5, 10.0)
    child = niches.interpolate(niches.mixing_weights(5, 0.2, 3), a, b, "linear")
    assert child == pytest.approx([2.0, 2.0, 2.0, 8.0, 8.0])


def test_slerp_follows_the_great_circle() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    mid = niches.interpolate(np.full(2, 0.5), a, b, "slerp")
    assert mid == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    # parallel vectors: slerp degenerates to linear interpolation
    assert niches.interpolate(np.full(2, 0.25), a, 3 * a, "slerp") == pytest.approx([1.5, 0.0])
    with pytest.raises(ValueError):
        niches.interpolate(np.full(2, 0.5), a, b, "cubic")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.floats(0, 1),
)
def test_interpolation_endpoints_are_the_parents(a: list[float], b: list[float], t: float) -> None:
    va, vb = np.array(a), np.array(b)
    for method in ("linear", "slerp"):
        assert niches.interpolate(np.zeros(3), va, vb, method) == pytest.approx(va, abs=1e-9)
        assert niches.interpolate(np.ones(3), va, vb, method) == pytest.approx(vb, abs=1e-9)
    lin = niches.interpolate(np.full(3, t), va, vb, "linear")
    assert np.all(lin >= np.minimum(va, vb) - 1e-9) and np.all(lin <= np.maximum(va, vb) + 1e-9)


# ---------------------------------------------------------------------- the strategy
A = np.array([1, 1, 1, 1, 0, 0], dtype=float)  # accuracy 4/6
B = np.array([1, 1, 1, 0, 0, 0], dtype=float)  # 3/6
C = np.array([0, 0, 0, 0, 1, 1], dtype=float)  # 2/6, but the only solver of points 4 and 5


def result(c: Candidate, per_example: np.ndarray | None, value: float | None = None) -> Evaluation:
    acc = float(per_example.mean()) if per_example is not None else float(value or 0.0)
    return Evaluation(c.uid, EvalStatus.OK, {"accuracy": acc}, per_example=per_example)


def two_member_archive(**config: object) -> M2N2Strategy:
    strategy = make("m2n2", DirectSpace(4, n_initial=2), ACC, pop_size=2, **config)
    assert isinstance(strategy, M2N2Strategy)
    first = strategy.ask(5)
    assert len(first) == 2 and all(c.meta["role"] == "init" for c in first)
    strategy.tell([result(first[0], A), result(first[1], B)])
    return strategy


@pytest.mark.parametrize(("competition", "admitted"), [(True, True), (False, False)])
def test_a_unique_solver_enters_only_with_competition(competition: bool, admitted: bool) -> None:
    strategy = two_member_archive(use_competition=competition)
    child = strategy.ask(1)[0]
    assert child.meta["role"] == "child" and len(child.parents) == 2
    strategy.tell([result(child, C)])
    assert (child.uid in strategy.uids) is admitted
    if admitted:  # B (fitness 1.5 against the child's 2) made room
        assert strategy.uids[1] == child.uid


def test_a_weaker_child_is_rejected_and_a_stronger_one_replaces_the_weakest() -> None:
    strategy = two_member_archive()
    weak, strong = strategy.ask(2)
    strategy.tell([result(weak, np.array([1, 0, 0, 0, 0, 0], dtype=float))])
    assert weak.uid not in strategy.uids
    strategy.tell([result(strong, np.ones(6))])
    assert strategy.uids[1] == strong.uid and strategy.archive()[0]["uid"] == strong.uid


def test_children_wait_for_the_initial_archive() -> None:
    space = CoefficientSpace(3)
    strategy = make("m2n2", space, ACC, pop_size=5)
    first = strategy.ask(10)
    assert len(first) == 5
    assert [c.genome for c in first[:3]] == space.initial_points()
    assert strategy.ask(3) == []
    strategy.tell([result(c, None, 0.1 * i) for i, c in enumerate(first[:4])])
    assert strategy.ask(3) == []
    strategy.tell([result(first[4], None, 0.9)])
    assert len(strategy.ask(3)) == 3


def test_initial_fill_none_keeps_only_the_initial_points() -> None:
    strategy = make("m2n2", CoefficientSpace(3), ACC, pop_size=6, initial_fill="none")
    assert len(strategy.ask(10)) == 3


def test_crossover_without_split_mixes_the_whole_vector() -> None:
    strategy = two_member_archive(mixing="linear", use_splitpoint=False)
    child = strategy.ask(1)[0]
    pa, pb = (strategy.genomes[strategy.uids.index(u)].vector for u in child.parents)
    w = child.meta["w"]
    assert child.meta["split"] is None
    assert child.genome.vector == pytest.approx(np.clip((1 - w) * pa + w * pb, -1, 1))


def test_crossover_with_split_uses_both_ratios() -> None:
    strategy = two_member_archive(mixing="linear")
    for child in strategy.ask(6):
        pa, pb = (strategy.genomes[strategy.uids.index(u)].vector for u in child.parents)
        weights = niches.mixing_weights(4, child.meta["w"], child.meta["split"])
        assert child.genome.vector == pytest.approx(np.clip((1 - weights) * pa + weights * pb, -1, 1))


def three_member_archive(**config: object) -> M2N2Strategy:
    """The archive of :data:`S`: member 0 misses point 1, which member 1 alone solves."""
    strategy = make("m2n2", DirectSpace(4, n_initial=3), ACC, pop_size=3, **config)
    assert isinstance(strategy, M2N2Strategy)
    first = strategy.ask(3)
    strategy.tell([result(c, row) for c, row in zip(first, S)])
    return strategy


@pytest.mark.parametrize("matchmaker", [True, False])
def test_matchmaker_switch_decides_the_second_parent(matchmaker: bool) -> None:
    strategy = three_member_archive(use_matchmaker=matchmaker)
    first, second, third = strategy.uids
    partners = {child.parents[1] for child in strategy.ask(300) if child.parents[0] == first}
    # attraction: only member 1 gains anything where member 0 is weak; without it, anyone by fitness
    assert partners == ({second} if matchmaker else {first, second, third})


def test_splitpoint_switch_decides_whether_children_mix_with_two_ratios() -> None:
    with_split = three_member_archive(mixing="linear").ask(50)
    without = three_member_archive(mixing="linear", use_splitpoint=False).ask(50)
    assert all(c.meta["split"] is not None for c in with_split)
    assert len({c.meta["split"] for c in with_split}) > 1
    assert all(c.meta["split"] is None for c in without)


def test_competition_switch_is_alpha_zero() -> None:
    unshared = three_member_archive(use_competition=False)
    assert unshared.alpha == 0.0
    # plain accuracy: members 0 and 1 tie at 2 correct, member 2 trails with 1
    assert [a["fitness"] for a in unshared.archive()] == pytest.approx([2.0, 2.0, 1.0])
    assert [a["fitness"] for a in three_member_archive().archive()] == pytest.approx([1.5, 1.0, 0.5])


def test_without_crossover_a_child_copies_parent_a() -> None:
    strategy = two_member_archive(use_crossover=False)
    child = strategy.ask(1)[0]
    assert child.genome == strategy.genomes[strategy.uids.index(child.parents[0])]


@pytest.mark.parametrize(("operate_in", "expected_std"), [("raw", 0.01), ("unit", 0.04)])
def test_mutation_noise_scale(operate_in: str, expected_std: float) -> None:
    space = DirectSpace(4000, bound=2.0, n_initial=2)
    strategy = make(
        "m2n2", space, ACC, pop_size=2, use_crossover=False, mutation_std=0.01, operate_in=operate_in
    )
    init = strategy.ask(2)
    strategy.tell([result(init[0], A), result(init[1], B)])
    child = strategy.ask(1)[0]
    parent = strategy.genomes[strategy.uids.index(child.parents[0])]
    assert np.std(child.genome.vector - parent.vector) == pytest.approx(expected_std, rel=0.1)


def test_scalar_objective_without_per_example_scores() -> None:
    strategy = make("m2n2", DirectSpace(3), [Objective("loss", "minimize")], pop_size=2)
    a, b = strategy.ask(2)
    strategy.tell(
        [Evaluation(a.uid, EvalStatus.OK, {"loss": 1.0}), Evaluation(b.uid, EvalStatus.OK, {"loss": 3.0})]
    )
    worse, better = strategy.ask(2)
    strategy.tell([Evaluation(worse.uid, EvalStatus.OK, {"loss": 5.0})])
    assert worse.uid not in strategy.uids
    strategy.tell([Evaluation(better.uid, EvalStatus.OK, {"loss": 2.0})])
    assert set(strategy.uids) == {a.uid, better.uid}


def test_missing_per_example_scores_are_treated_as_failures() -> None:
    strategy = two_member_archive()
    child = strategy.ask(1)[0]
    with pytest.warns(UserWarning, match="per-example"):
        strategy.tell([result(child, None, 1.0)])
    assert child.uid not in strategy.uids


def test_capacity_list_must_match_the_resources() -> None:
    with pytest.raises(ConfigError, match="capacit"):
        two_member_archive(capacity=[1.0, 2.0])
    with pytest.raises(ValueError):
        make("m2n2", DirectSpace(3), ACC, capacity=[1.0, -1.0])


def test_m2n2_evolves_a_classifier_from_weak_starts() -> None:
    x, y = classifier_data(n=80, dim=4)
    fn = per_example_accuracy(x, y)
    space = DirectSpace(4, n_initial=2)
    start = max(fn(c).objectives["accuracy"] for c in make("m2n2", space, ACC).ask(2))
    strategy = make("m2n2", space, ACC, seed=0, fast=False, pop_size=10, mutation_std=0.05)
    history = drive(strategy, fn, budget=300)
    assert start <= 0.5
    assert max(e.objectives["accuracy"] for _, e in history) >= 0.95


def test_large_genomes_stay_fast() -> None:
    dim = 20_000
    space = DirectSpace(dim, n_initial=2)
    rng = np.random.default_rng(0)
    strategy = make("m2n2", space, ACC, pop_size=4, mutation_std=0.01)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drive(strategy, lambda c: result(c, (rng.random(50) < 0.5).astype(float)), budget=40, batch=8)
    assert time.perf_counter() - t0 < 10.0
    assert strategy.genomes[0].vector.shape == (dim,)
