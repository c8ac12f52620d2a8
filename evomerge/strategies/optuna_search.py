"""Optuna TPE or NSGA-II through Optuna's ask/tell, with the study in an Optuna storage.

Storage: ``strategy.storage`` (any RDB URL, for a cluster), else ``sqlite:///RUN_DIR/optuna.db`` when the
strategy has a run directory, else memory. The study is opened with ``load_if_exists`` so a resumed run
keeps its trials; every trial carries its candidate's uid as user attribute ``evomerge_uid``. Failed,
invalid and timed-out evaluations are told as ``TrialState.FAIL``. Not generational: ``ask(n)`` always
returns n candidates (TPE's constant liar keeps parallel proposals apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.optuna_study import StudyDriver, make_sampler
from evomerge.strategies.pareto import FrontPoint
from evomerge.strategies.pending import Pending, check_ask
from evomerge.types import Candidate, Evaluation, Genome


class OptunaConfig(StrategyConfig):
    name: str = "optuna"
    sampler: Literal["auto", "tpe", "nsga2"] = "auto"
    storage: str | None = Field(None, description="RDB URL; default sqlite in the run directory")
    study_name: str = Field("evomerge", min_length=1)
    n_startup_trials: int = Field(10, ge=0, description="TPE: random trials before the model")
    multivariate: bool = True
    constant_liar: bool = True
    population_size: int = Field(50, ge=2, description="NSGA-II population")
    enqueue_initial: bool = Field(False, description="evaluate space.start() and initial_points() first")


def storage_url(config: OptunaConfig, run_dir: str | None) -> str | None:
    if config.storage is not None:
        return config.storage
    if run_dir is None:
        return None
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


def objective_values(strategy: Strategy, ev: Evaluation) -> list[float] | None:
    """The evaluation's raw objective values in objective order, or ``None`` if it failed."""
    if strategy.scores(ev) is None:
        return None
    values = [float(ev.objectives[o.name]) for o in strategy.objectives]
    return values if all(math.isfinite(v) for v in values) else None


@register_strategy
class OptunaStrategy(Strategy):
    name = "optuna"
    Config = OptunaConfig
    config: OptunaConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        sampler = make_sampler(
            cfg.sampler,
            len(self.objectives),
            self.seed_tree.small_integer("strategy/optuna/sampler"),
            n_startup_trials=cfg.n_startup_trials,
            multivariate=cfg.multivariate,
            constant_liar=cfg.constant_liar,
            population_size=cfg.population_size,
        )
        self.driver = StudyDriver(
            self.space, self.objectives, sampler, storage_url(cfg, self.run_dir), cfg.study_name
        )
        self.pending: Pending[int] = Pending()
        fresh = len(self.driver.study.trials) == 0
        self.queue = (
            [self.space.start(), *self.space.initial_points()] if cfg.enqueue_initial and fresh else []
        )
        self.n_told = 0

    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        out = []
        for _ in range(n):
            fixed = self.space.clip(self.queue.pop(0)) if self.queue else None
            trial, genome = self.driver.ask(fixed)
            cand = self.make_candidate(genome, generation=self.n_told, meta={"trial": trial.number})
            self.driver.tag(trial, cand.uid)
            self.pending.add(cand.uid, trial.number)
            out.append(cand)
        return out

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        for ev, number in self.pending.take(evaluations):
            self.driver.tell(number, objective_values(self, ev))
            self.n_told += 1

    def pareto_front(self) -> list[FrontPoint]:
        """The non-dominated evaluated candidates (the best ones for a single objective)."""
        return self.driver.front()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            driver=self.driver.state_dict(),
            pending=self.pending.state_dict(),
            queue=[(g.vector.copy(), g.choices) for g in self.queue],
            n_told=self.n_told,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pending.load_state_dict(state["pending"])
        self.driver.load_state_dict(state["driver"], running=self.pending.payloads())
        self.queue = [Genome(v, c) for v, c in state["queue"]]
        self.n_told = int(state["n_told"])
