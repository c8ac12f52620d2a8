"""The Optuna strategy: distributions, storage, resume, failures, fronts."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from evomerge.errors import ConfigError
from evomerge.strategies.optuna_search import OptunaStrategy
from evomerge.strategies.optuna_study import GenomeParams
from evomerge.strategies.pareto import FrontPoint, front_of
from evomerge.types import EvalStatus, Evaluation, Genome, Objective
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    CoefficientSpace,
    MixedSpace,
    biobjective,
    drive,
    evaluate,
    fingerprint,
    make,
    sphere,
)


def optuna_strategy(space: object, run_dir: Path | None = None, **config: object) -> OptunaStrategy:
    strategy = make("optuna", space, run_dir=None if run_dir is None else str(run_dir), **config)  # type: ignore[arg-type]
    assert isinstance(strategy, OptunaStrategy)
    return strategy


def test_distributions_follow_the_space() -> None:
    params = GenomeParams(MixedSpace(groups=1))
    assert params.distributions == {
        "g0.weight": FloatDistribution(0.0, 1.0),
        "g0.density": FloatDistribution(0.01, 1.0, log=True),
        "g0.method": CategoricalDistribution(["linear", "slerp", "ties"]),
    }
    genome = Genome(np.array([0.25, 0.5]), (2,))
    assert params.to_params(genome) == {"g0.weight": 0.25, "g0.density": 0.5, "g0.method": "ties"}
    assert params.to_genome(params.to_params(genome)) == genome


def test_sampler_choice() -> None:
    space = CoefficientSpace()
    assert isinstance(optuna_strategy(space).driver.study.sampler, optuna.samplers.TPESampler)
    multi = make("optuna", space, BI_OBJECTIVES)
    assert isinstance(multi.driver.study.sampler, optuna.samplers.NSGAIISampler)  # type: ignore[attr-defined]
    motpe = make("optuna", space, BI_OBJECTIVES, sampler="tpe")
    assert isinstance(motpe.driver.study.sampler, optuna.samplers.TPESampler)  # type: ignore[attr-defined]


def test_sqlite_study_in_the_run_dir_records_uids_values_and_failures(tmp_path: Path) -> None:
    space = CoefficientSpace()
    strategy = optuna_strategy(space, tmp_path)
    cands = strategy.ask(3)
    strategy.tell(
        [
            Evaluation(cands[0].uid, EvalStatus.OK, {"score": 0.5}),
            Evaluation.failure(cands[1].uid, "oom"),
            Evaluation.failure(cands[2].uid, "slow", status=EvalStatus.TIMEOUT),
        ]
    )
    assert (tmp_path / "optuna.db").is_file()
    study = optuna.load_study(study_name="evomerge", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.user_attrs["evomerge_uid"] for t in trials] == [c.uid for c in cands]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].values == [0.5]
    assert trials[0].params == {f"w{i}": cands[0].genome.vector[i] for i in range(3)}


def test_minimised_objectives_are_stored_as_they_are() -> None:
    strategy = make("optuna", CoefficientSpace(), [Objective("loss", "minimize")])
    cand = strategy.ask(1)[0]
    strategy.tell([Evaluation(cand.uid, EvalStatus.OK, {"loss": 2.5})])
    study = strategy.driver.study  # type: ignore[attr-defined]
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.trials[0].value == 2.5


def test_resume_from_sqlite_continues_exactly(tmp_path: Path) -> None:
    space = MixedSpace()
    fn = sphere(space)
    original = optuna_strategy(space, tmp_path / "a")
    drive(original, fn, budget=6, batch=3)
    pending = original.ask(2)
    state = pickle.dumps(original.state_dict())
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the database as it was at the checkpoint
    restored = optuna_strategy(space, tmp_path / "b")
    restored.load_state_dict(pickle.loads(state))
    original.tell(evaluate(pending, fn))
    restored.tell(evaluate(pending, fn))
    for _ in range(3):
        a, b = original.ask(2), restored.ask(2)
        assert fingerprint(a) == fingerprint(b)
        original.tell(evaluate(a, fn))
        restored.tell(evaluate(b, fn))


def test_trials_asked_after_the_checkpoint_are_failed_on_restore(tmp_path: Path) -> None:
    space = CoefficientSpace()
    original = optuna_strategy(space, tmp_path)
    drive(original, sphere(space), budget=4)
    state = pickle.dumps(original.state_dict())
    orphans = original.ask(2)  # asked, then the driver crashed before the next checkpoint
    restored = optuna_strategy(space, tmp_path)
    restored.load_state_dict(pickle.loads(state))
    by_uid = {t.user_attrs["evomerge_uid"]: t.state for t in restored.driver.study.get_trials()}
    assert [by_uid[c.uid] for c in orphans] == [TrialState.FAIL, TrialState.FAIL]


def test_an_existing_study_is_loaded_not_restarted(tmp_path: Path) -> None:
    space = CoefficientSpace()
    drive(optuna_strategy(space, tmp_path, enqueue_initial=True), sphere(space), budget=6)
    again = optuna_strategy(space, tmp_path, enqueue_initial=True)
    assert len(again.driver.study.trials) == 6
    assert again.queue == []  # the warm start is not repeated on an existing study


def test_enqueue_initial_evaluates_start_and_sources_first() -> None:
    space = CoefficientSpace(3)
    first = optuna_strategy(space, enqueue_initial=True).ask(4)
    assert [c.genome for c in first] == [space.start(), *space.initial_points()]


def test_storage_errors_are_config_errors(tmp_path: Path) -> None:
    space = CoefficientSpace()
    with pytest.raises(ConfigError, match="storage"):
        optuna_strategy(space, storage="nosuchdb://x/y")
    optuna_strategy(space, tmp_path)
    with pytest.raises(ConfigError, match="directions"):
        make("optuna", space, [Objective("score", "minimize")], run_dir=str(tmp_path))


def test_pareto_front_is_the_non_dominated_evaluated_set() -> None:
    strategy = make("optuna", CoefficientSpace(), BI_OBJECTIVES)
    history = drive(strategy, biobjective([0.2, 0.2, 0.2], [0.9, 0.5, 0.1]), budget=30)
    points = [FrontPoint(c.genome, e.objectives, c.uid) for c, e in history]
    expected = {p.uid for p in front_of(points, BI_OBJECTIVES)}
    front = strategy.pareto_front()  # type: ignore[attr-defined]
    assert {p.uid for p in front} == expected
    by_uid = {c.uid: (c, e) for c, e in history}
    for p in front:
        assert p.genome == by_uid[p.uid][0].genome and p.values == by_uid[p.uid][1].objectives


def test_tpe_beats_its_own_random_startup() -> None:
    space = CoefficientSpace(4)
    history = drive(make("optuna", space, fast=False), sphere(space), budget=60, batch=2)
    startup = max(e.objectives["score"] for _, e in history[:10])
    assert max(e.objectives["score"] for _, e in history[10:]) > startup
