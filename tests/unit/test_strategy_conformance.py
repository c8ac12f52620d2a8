"""The ask/tell contract, checked for every registered strategy (a new one is covered automatically)."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydantic
import pytest

import evomerge.strategies  # noqa: F401  (registers the built-ins)
from evomerge.errors import ConfigError, UnknownNameError
from evomerge.strategies.base import STRATEGIES, Strategy, get_strategy
from evomerge.types import Candidate, EvalStatus, Evaluation
from search_spaces.base import CategoricalDim, FloatDim, SearchSpace
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    OPERATORS,
    BoxSpace,
    CoefficientSpace,
    DirectSpace,
    MixedSpace,
    biobjective,
    digest_run,
    drive,
    evaluate,
    fingerprint,
    make,
    sphere,
)

NAMES = STRATEGIES.names()
SPACES: dict[str, Callable[[], SearchSpace]] = {
    "mixed": MixedSpace,
    "coefficients": CoefficientSpace,
    "direct": lambda: DirectSpace(6),
    "one_float": lambda: BoxSpace([FloatDim("x", -1.0, 2.0)]),
    "choices_only": lambda: BoxSpace(
        [], [CategoricalDim("op", OPERATORS), CategoricalDim("on", ("no", "yes"))]
    ),
}
REPO = Path(__file__).resolve().parents[2]


def lockstep(a: Strategy, b: Strategy, space: SearchSpace, rounds: int, batch: int = 3) -> int:
    """Ask both, require identical proposals, tell both the same results; returns proposals compared."""
    fn, compared = sphere(space), 0
    for _ in range(rounds):
        ca, cb = a.ask(batch), b.ask(batch)
        assert fingerprint(ca) == fingerprint(cb)
        compared += len(ca)
        evals = evaluate(ca, fn)
        a.tell(evals)
        b.tell(evaluate(cb, fn))
    return compared


def test_every_builtin_is_registered() -> None:
    assert {"random", "cmaes", "m2n2", "layerwise_zo", "optuna", "map_pareto"} <= set(NAMES)


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("name", NAMES)
def test_candidates_are_valid(name: str, space_name: str) -> None:
    space = SPACES[space_name]()
    history = drive(make(name, space), sphere(space), budget=30)
    assert history, "the strategy proposed nothing"
    uids = [c.uid for c, _ in history]
    assert len(set(uids)) == len(uids)
    for cand, _ in history:
        assert space.contains(cand.genome, tol=0.0)
        assert all(0 <= k < n for k, n in zip(cand.genome.choices, space.n_choices))
        assert cand.strategy == name and cand.uid.startswith(name)
        assert cand.plan == space.decode(cand.genome)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_candidates_other_seed_others(name: str) -> None:
    space = MixedSpace()
    runs = [[c for c, _ in drive(make(name, space, seed=s), sphere(space), budget=24)] for s in (5, 5, 6)]
    assert fingerprint(runs[0]) == fingerprint(runs[1])
    assert fingerprint(runs[0]) != fingerprint(runs[2])


@pytest.fixture(scope="module")
def fresh_process_digests() -> dict[str, str]:
    code = "import json; from tests.unit.strategy_toys import digest_run; " + (
        f"print(json.dumps({{n: digest_run(n) for n in {NAMES!r}}}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", NAMES)
def test_fresh_process_gives_the_same_candidates(name: str, fresh_process_digests: dict[str, str]) -> None:
    assert fresh_process_digests[name] == digest_run(name)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run(name: str) -> None:
    space = MixedSpace()
    original = make(name, space, seed=3)
    drive(original, sphere(space), budget=9, batch=3)
    in_flight = original.ask(2)  # checkpoint with results outstanding, as the manager does
    restored = make(name, space, seed=3)
    restored.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    evals = evaluate(in_flight, sphere(space))
    original.tell(evals)
    restored.tell(pickle.loads(pickle.dumps(evals)))
    assert lockstep(original, restored, space, rounds=6) > 0


@pytest.mark.parametrize("name", NAMES)
def test_failed_invalid_and_timed_out_results_are_accepted(name: str) -> None:
    space = CoefficientSpace()
    good = sphere(space)
    kinds = [EvalStatus.FAILED, EvalStatus.INVALID, EvalStatus.TIMEOUT, "nan", "missing", "ok"]

    def flaky(c: Candidate) -> Evaluation:
        kind = kinds[int(c.uid.rsplit("-", 1)[1]) % len(kinds)]
        if isinstance(kind, EvalStatus):
            return Evaluation.failure(c.uid, "boom", status=kind)
        if kind == "nan":
            return Evaluation(c.uid, EvalStatus.OK, {"score": float("nan")}).checked()
        if kind == "missing":
            return Evaluation(c.uid, EvalStatus.OK, {"other": 1.0})
        return good(c)

    history = drive(make(name, space), flaky, budget=40)
    assert len(history) >= 12
    strategy = make(name, space)
    everything_fails = drive(strategy, lambda c: Evaluation.failure(c.uid, "down"), budget=20)
    assert everything_fails
    assert strategy.finished or strategy.ask(1)


@pytest.mark.parametrize("name", NAMES)
def test_results_in_shuffled_order_give_the_same_state(name: str) -> None:
    space = MixedSpace()
    fn = sphere(space)
    ordered, shuffled = make(name, space, seed=1), make(name, space, seed=1)
    shuffler = random.Random(0)
    for _ in range(6):
        ca, cb = ordered.ask(5), shuffled.ask(5)
        assert fingerprint(ca) == fingerprint(cb)
        evals = evaluate(cb, fn)
        ordered.tell(evaluate(ca, fn))
        shuffler.shuffle(evals)
        shuffled.tell(evals)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_repeated_results_are_ignored(name: str) -> None:
    space = CoefficientSpace()
    fn = sphere(space)
    plain, noisy = make(name, space), make(name, space)
    for _ in range(5):
        ca, cb = plain.ask(3), noisy.ask(3)
        plain.tell(evaluate(ca, fn))
        evals = evaluate(cb, fn)
        noisy.tell([*evals, Evaluation("somebody-else-000001", EvalStatus.OK, {"score": 9.0})])
        noisy.tell(evals[:1])  # told again
    lockstep(plain, noisy, space, rounds=2)


@pytest.mark.parametrize("name", NAMES)
def test_ask_zero_returns_nothing_and_changes_nothing(name: str) -> None:
    space = MixedSpace()
    a, b = make(name, space), make(name, space)
    assert a.ask(0) == []
    assert lockstep(a, b, space, rounds=3) > 0
    with pytest.raises(ValueError):
        a.ask(-1)


@pytest.mark.parametrize("name", NAMES)
def test_no_global_random_state_is_used(name: str) -> None:
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    space = MixedSpace()
    drive(make(name, space), sphere(space), budget=30)
    after = np.random.get_state()
    assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(np_state, after))
    assert random.getstate() == py_state


@pytest.mark.parametrize("name", NAMES)
def test_config_defaults_are_valid_and_extras_rejected(name: str) -> None:
    cls = get_strategy(name)
    config = cls.Config(name=name)
    with pytest.raises(pydantic.ValidationError):
        cls.Config(name=name, no_such_field=1)
    with pytest.raises(pydantic.ValidationError):
        config.name = "other"  # frozen


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_strategy("annealing")
    assert all(n in str(info.value) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_several_objectives_are_searched_or_refused_clearly(name: str) -> None:
    space = CoefficientSpace()
    try:
        strategy = make(name, space, BI_OBJECTIVES)
    except ConfigError as exc:
        assert "objective" in str(exc)
        return
    history = drive(strategy, biobjective([0.2, 0.2, 0.2], [0.8, 0.8, 0.8]), budget=24)
    assert len(history) >= 8


def test_a_strategy_needs_an_objective() -> None:
    with pytest.raises(ValueError):
        make("random", CoefficientSpace(), objectives=[])
