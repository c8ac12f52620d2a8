"""An Optuna study driven from outside (ask/tell) over a search space's genomes.

Shared by the ``optuna`` and ``layerwise_zo`` strategies (and MAP's surrogate solve): explicit
distributions per dimension (``FloatDistribution``, log-scaled where the dimension is;
``CategoricalDistribution`` over the option names), samplers seeded from the run's seed tree, and a state
dict that lets a restored study continue exactly: the sampler (its RNG included) is pickled, and so is the
whole study when it lives in memory; an RDB study lives in its database.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from evomerge.errors import ConfigError
from evomerge.strategies.pareto import FrontPoint
from evomerge.types import Genome, Objective
from search_spaces.base import SearchSpace

UID_ATTR = "evomerge_uid"


def quiet_optuna() -> None:
    """Optuna logs every finished trial at INFO; evomerge's trackers report progress instead."""
    logging.getLogger("optuna").setLevel(logging.WARNING)


def make_sampler(kind: str, n_objectives: int, seed: int, **options: Any) -> optuna.samplers.BaseSampler:
    """``tpe`` (MOTPE with several objectives), ``nsga2`` or ``auto`` (TPE for one objective, NSGA-II else)."""
    if kind == "auto":
        kind = "tpe" if n_objectives == 1 else "nsga2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=options.get("n_startup_trials", 10),
                multivariate=options.get("multivariate", True),
                constant_liar=options.get("constant_liar", True),
            )
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(
                seed=seed, population_size=options.get("population_size", 50)
            )
    raise ConfigError(f"unknown sampler {kind!r}; known: auto, nsga2, tpe", "strategy.sampler")


class GenomeParams:
    """Genome ↔ Optuna params: one named distribution per continuous and categorical dimension."""

    def __init__(self, space: SearchSpace) -> None:
        names: list[str] = []
        for dim_name in [d.name for d in space.float_dims] + [c.name for c in space.cat_dims]:
            names.append(dim_name if dim_name not in names else f"{dim_name}#{len(names)}")
        self.float_names = names[: len(space.float_dims)]
        self.cat_names = names[len(space.float_dims) :]
        self.options = [
            c.options if len(set(c.options)) == len(c.options) else tuple(range(len(c.options)))
            for c in space.cat_dims
        ]
        self.distributions: dict[str, BaseDistribution] = {}
        for name, d in zip(self.float_names, space.float_dims):
            self.distributions[name] = FloatDistribution(d.low, d.high, log=d.log)
        for name, opts in zip(self.cat_names, self.options):
            self.distributions[name] = CategoricalDistribution(list(opts))

    def to_params(self, genome: Genome) -> dict[str, Any]:
        params: dict[str, Any] = {n: float(v) for n, v in zip(self.float_names, genome.vector)}
        params.update({n: opts[c] for n, opts, c in zip(self.cat_names, self.options, genome.choices)})
        return params

    def to_genome(self, params: dict[str, Any]) -> Genome:
        vector = np.array([float(params[n]) for n in self.float_names], dtype=np.float64)
        choices = [list(opts).index(params[n]) for n, opts in zip(self.cat_names, self.options)]
        return Genome(vector, tuple(choices))


class StudyDriver:
    """One study, its sampler and storage; trials are addressed by number."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        sampler: optuna.samplers.BaseSampler,
        storage: str | None = None,
        study_name: str = "evomerge",
    ) -> None:
        quiet_optuna()
        self.params = GenomeParams(space)
        self.objectives = list(objectives)
        self.study_name = study_name
        self.storage: str | BaseStorage = storage if storage is not None else InMemoryStorage()
        directions = [o.direction for o in self.objectives]
        try:
            self.study = optuna.create_study(
                storage=self.storage,
                sampler=sampler,
                study_name=study_name,
                directions=directions,
                load_if_exists=True,
            )
        except (ValueError, ImportError, SQLAlchemyError) as exc:  # bad URL, missing driver, unreachable
            raise ConfigError(f"cannot open Optuna storage {storage!r}: {exc}", "strategy.storage") from exc
        if [d.name.lower() for d in self.study.directions] != directions:
            raise ConfigError(
                f"study {study_name!r} in {storage} has directions {[d.name.lower() for d in self.study.directions]}, "
                f"the objectives need {directions}; use another study_name",
                "strategy.study_name",
            )

    def ask(self, genome: Genome | None = None) -> tuple[optuna.Trial, Genome]:
        """A new trial, at ``genome`` if given, else where the sampler proposes."""
        if genome is not None:
            self.study.enqueue_trial(self.params.to_params(genome), skip_if_exists=False)
        trial = self.study.ask(self.params.distributions)
        return trial, self.params.to_genome(trial.params)

    @staticmethod
    def tag(trial: optuna.Trial, uid: str) -> None:
        """Record the candidate's uid on its trial (dashboards, and the front's uids)."""
        trial.set_user_attr(UID_ATTR, uid)

    def tell(self, number: int, values: Sequence[float] | None) -> None:
        if values is None:
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, values=[float(v) for v in values])

    def front(self) -> list[FrontPoint]:
        """Optuna's Pareto front (the best trials for one objective), in trial order."""
        points = []
        for t in sorted(self.study.best_trials, key=lambda t: t.number):
            values = {o.name: float(v) for o, v in zip(self.objectives, t.values)}
            genome = self.params.to_genome(t.params)
            points.append(FrontPoint(genome, values, t.user_attrs.get(UID_ATTR), meta={"trial": t.number}))
        return points

    @property
    def in_memory(self) -> bool:
        return isinstance(self.storage, InMemoryStorage)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": pickle.dumps(self.study.sampler),
            "storage": pickle.dumps(self.storage) if self.in_memory else None,
        }

    def load_state_dict(self, state: dict[str, Any], running: Sequence[int]) -> None:
        """Restore sampler (and in-memory study); trials still running in the storage that the checkpoint
        does not know (``running`` lists those it does) are failed: they were asked after it was taken."""
        sampler = pickle.loads(state["sampler"])
        if state["storage"] is not None:
            self.storage = pickle.loads(state["storage"])
        self.study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=sampler)
        keep = set(running)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in keep:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
