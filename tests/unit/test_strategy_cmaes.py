"""CMA-ES: generational ask/tell, improvement on a sphere, IPOP restarts, failures, categoricals, resume
in another process."""

from __future__ import annotations

import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cma
import numpy as np
import pydantic
import pytest

from evomerge.errors import ConfigError, RunStateError
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


def test_failures_are_ranked_below_every_success(monkeypatch: pytest.MonkeyPatch) -> None:
    space = CoefficientSpace(3)
    strategy = cmaes(space, popsize=6)
    told: list[tuple[list[np.ndarray], list[float]]] = []
    es_tell = cma.CMAEvolutionStrategy.tell

    def spy(es: cma.CMAEvolutionStrategy, solutions: list[np.ndarray], losses: list[float]) -> None:
        told.append((solutions, list(losses)))
        es_tell(es, solutions, losses)

    # on the class: the strategy pickles its es, which an instance attribute holding a closure would break
    monkeypatch.setattr(cma.CMAEvolutionStrategy, "tell", spy)
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


# A resumed process: load a mid-generation checkpoint, tell the open generation, run on; report the mean,
# the process's hash of a fixed string (proof that hashing differs) and the warnings raised.
RESUME_ELSEWHERE = """
import pickle, sys, warnings
from tests.unit.strategy_toys import CoefficientSpace, evaluate, make, sphere
state, told, generations = pickle.loads(sys.stdin.buffer.read())
space = CoefficientSpace(3)
strategy = make("cmaes", space, fast=False, popsize=4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    strategy.load_state_dict(state)
    strategy.tell(told)
    for _ in range(generations):
        strategy.tell(evaluate(strategy.ask(4), sphere(space)))
sys.stdout.buffer.write(pickle.dumps((hash(b"evomerge"), strategy.es.mean, [str(w.message) for w in caught])))
"""


def test_mid_generation_checkpoint_resumes_identically_in_another_process() -> None:
    # popsize 4 makes pycma inject mirrored points, which it files under a per-process salted hash
    space = CoefficientSpace(3)
    strategy = cmaes(space, popsize=4)
    for _ in range(3):
        strategy.tell(evaluate(strategy.ask(4), sphere(space)))
    told = evaluate(strategy.ask(4), sphere(space))
    state = pickle.dumps((strategy.state_dict(), told, 8))
    strategy.tell(told)
    for _ in range(8):
        strategy.tell(evaluate(strategy.ask(4), sphere(space)))

    env = {**os.environ, "PYTHONHASHSEED": "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", RESUME_ELSEWHERE], input=state, capture_output=True,
                          env=env, cwd=repo, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    other_hash, mean, messages = pickle.loads(done.stdout)
    assert other_hash != hash(b"evomerge")  # the two processes do hash differently
    assert not [m for m in messages if "orphan" in m]
    assert np.array_equal(mean, strategy.es.mean)  # type: ignore[union-attr]


def test_a_checkpoint_whose_generation_cannot_be_redrawn_is_refused() -> None:
    space = CoefficientSpace(3)
    strategy = cmaes(space, popsize=4)
    strategy.ask(4)
    state = strategy.state_dict()
    state["batch"][0]["x"] = state["batch"][0]["x"] + 0.01
    with pytest.raises(RunStateError, match="re-drawn"):
        cmaes(space, popsize=4).load_state_dict(state)


PLATEAU = {"tolflatfitness": 10**6, "tolfun": 0, "tolfunhist": 0}


def test_pycma_options_reach_pycma_and_can_keep_a_tied_search_going() -> None:
    # every candidate ties: pycma's default stop criteria end the run after one generation
    assert len(drive(cmaes(CoefficientSpace(3), popsize=4), constant, budget=100)) == 4
    strategy = cmaes(CoefficientSpace(3), popsize=4, options=PLATEAU)
    assert strategy.es.opts["tolflatfitness"] == 10**6  # type: ignore[union-attr]
    assert len(drive(strategy, constant, budget=100)) == 100 and not strategy.finished


@pytest.mark.parametrize(
    ("options", "message"),
    [({"tolflatfitnes": 5}, "unknown pycma option 'tolflatfitnes'; did you mean tolflatfitness"),
     ({"popsize": 9}, "'popsize' is set by the strategy (use strategy.popsize)")],
)
def test_unknown_or_owned_pycma_options_are_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        CMAESConfig(options=options)
