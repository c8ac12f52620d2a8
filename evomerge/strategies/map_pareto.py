"""MAP: model merging with amortized Pareto fronts via quadratic approximation (Li et al. 2024).

1. **Design**: evaluate a small set of coefficient vectors: the space's start and initial points, then a
   Latin hypercube over the unit cube (categorical choices uniform).
2. **Surrogates**: fit one quadratic per objective on the unit-cube coordinates (categoricals one-hot).
3. **Pareto set on the surrogates**: NSGA-II (Optuna) on the predicted objectives only, seeded with the
   evaluated non-dominated points, then each front point polished along its Chebyshev ray
   (:mod:`~evomerge.strategies.surrogate_front`): no model evaluations.
4. **Propose**: the predicted front, reduced to ``n_proposals`` points by greedy hypervolume subset
   selection (Optuna's HSSP), is asked for real evaluation. With ``rounds`` > 1 the surrogates are refitted
   on everything evaluated so far and the loop repeats (adaptive refinement in the spirit of Bayesian MAP).

The strategy is finished after its last round; :meth:`predicted_front` gives the surrogate front with
predicted values (the amortized front a user picks from), :meth:`pareto_front` the evaluated one. With a
single objective the "front" is the surrogate's best points, and those are proposed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna._hypervolume import _solve_hssp
from pydantic import Field

from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.optuna_search import objective_values
from evomerge.strategies.optuna_study import quiet_optuna
from evomerge.strategies.pareto import FrontPoint, front_of, non_dominated
from evomerge.strategies.pending import Pending, check_ask
from evomerge.strategies.quadratic import QuadraticSurrogate, n_features
from evomerge.strategies.surrogate_front import SurrogateProblem, surrogate_front
from evomerge.strategies.unit_cube import UnitCube
from evomerge.types import Candidate, Evaluation, Genome


class MAPConfig(StrategyConfig):
    name: str = "map_pareto"
    n_design: int | None = Field(
        None, ge=2, description="design size; default twice the quadratic's features"
    )
    include_initial: bool = Field(True, description="put space.start() and initial_points() in the design")
    n_proposals: int = Field(10, ge=1, description="predicted Pareto points evaluated per round")
    rounds: int = Field(1, ge=1, description="fit → propose → evaluate cycles")
    surrogate_trials: int = Field(1000, ge=10, description="NSGA-II evaluations of the surrogate per round")
    surrogate_population: int = Field(50, ge=4)


def latin_hypercube(rng: np.random.Generator, n: int, dimension: int) -> np.ndarray:
    """``n`` points in [0, 1)^d with exactly one point in each of the n strata of every coordinate."""
    if n == 0 or dimension == 0:
        return np.zeros((n, dimension))
    strata = np.stack([rng.permutation(n) for _ in range(dimension)], axis=1).reshape(n, dimension)
    return (strata + rng.random((n, dimension))) / n


@register_strategy
class MAPStrategy(Strategy):
    name = "map_pareto"
    Config = MAPConfig
    config: MAPConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_optuna()
        self.cube = UnitCube(self.space)
        width = self.cube.dimension + sum(self.cube.n_choices)
        self.n_design = self.config.n_design or 2 * n_features(width)
        self.round = 0
        self.pending: Pending[Genome] = Pending()
        self.queue: list[Genome] = self._design(self.config.include_initial)
        self.evaluated: list[FrontPoint] = []
        self.predicted: list[FrontPoint] = []
        self._finished = False

    # ------------------------------------------------------------------ design and encoding
    def _design(self, include_initial: bool) -> list[Genome]:
        points: list[Genome] = []
        if include_initial:
            for g in [self.space.start(), *self.space.initial_points()]:
                if self.space.clip(g) not in points:
                    points.append(self.space.clip(g))
        for row in latin_hypercube(self.rng, max(0, self.n_design - len(points)), self.cube.dimension):
            points.append(self.cube.genome(row, self.cube.sample_choices(self.rng)))
        return points

    def _encode(self, unit: np.ndarray, choices: Sequence[int]) -> np.ndarray:
        onehot = [np.eye(k)[c] for k, c in zip(self.cube.n_choices, choices)]
        return np.concatenate([unit, *onehot]) if onehot else np.asarray(unit, dtype=np.float64)

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        out: list[Candidate] = []
        while len(out) < n and self.queue:
            cand = self.make_candidate(self.queue.pop(0), generation=self.round, meta={"round": self.round})
            self.pending.add(cand.uid, cand.genome)
            out.append(cand)
        return out

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        names = [o.name for o in self.objectives]
        for ev, genome in self.pending.take(evaluations):
            values = objective_values(self, ev)
            if values is not None:
                self.evaluated.append(FrontPoint(genome, dict(zip(names, values)), ev.uid))
        if not self.queue and len(self.pending) == 0 and not self._finished:
            self._advance()

    def _advance(self) -> None:
        """All of this round's results are in: fit, solve on the surrogates, queue the next proposals."""
        if self.round >= self.config.rounds:
            self._finished = True
            return
        if not self.evaluated:  # nothing to fit: every design point failed, so draw a fresh design
            self.queue = self._design(include_initial=False)
            return
        x = np.stack(
            [self._encode(self.cube.to_unit(p.genome.vector), p.genome.choices) for p in self.evaluated]
        )
        y = np.stack([p.signed(self.objectives) for p in self.evaluated])
        surrogate = QuadraticSurrogate.fit(x, y)
        self.round += 1
        self.predicted = self._solve(surrogate, y)
        seen = [p.genome for p in self.evaluated]
        fresh = [p for p in self.predicted if p.genome not in seen]
        self.queue = [p.genome for p in self._select(fresh)]
        if not self.queue:
            self._advance()

    # ------------------------------------------------------------------ surrogate front
    def _solve(self, surrogate: QuadraticSurrogate, y: np.ndarray) -> list[FrontPoint]:
        """The predicted front (for one objective: the best predicted points) as genomes and values."""
        cfg = self.config
        problem = SurrogateProblem(
            predict=lambda unit, choices: surrogate.predict(self._encode(unit, choices)[None, :])[0],
            dimension=self.cube.dimension,
            n_choices=self.cube.n_choices,
            n_objectives=len(self.objectives),
        )
        seeds = [
            (self.cube.to_unit(self.evaluated[int(i)].genome.vector), self.evaluated[int(i)].genome.choices)
            for i in np.flatnonzero(non_dominated(y))
        ]
        seed = self.seed_tree.small_integer(f"strategy/map_pareto/surrogate/{self.round}")
        solved = surrogate_front(problem, seeds, seed, cfg.surrogate_trials, cfg.surrogate_population)
        if problem.n_objectives == 1:
            solved = solved[: 4 * cfg.n_proposals]
        front: list[FrontPoint] = []
        for (unit, choices), predicted in solved:
            genome = self.space.clip(self.cube.genome(unit, choices))
            values = {o.name: o.signed(float(v)) for o, v in zip(self.objectives, predicted)}
            if genome not in [p.genome for p in front]:
                front.append(FrontPoint(genome, values, None, meta={"predicted": 1.0}))
        return front

    def _select(self, points: list[FrontPoint]) -> list[FrontPoint]:
        """At most ``n_proposals`` points that best cover the predicted front (greedy hypervolume subset)."""
        k = self.config.n_proposals
        if len(points) <= k or len(self.objectives) == 1:
            return points[:k]
        losses = -np.stack([p.signed(self.objectives) for p in points])
        span = np.maximum(losses.max(axis=0) - losses.min(axis=0), 1e-12)
        reference = losses.max(axis=0) + 0.1 * span
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chosen = _solve_hssp(losses, np.arange(len(points)), k, reference)
        return [points[int(i)] for i in sorted(chosen)]

    # ------------------------------------------------------------------ results and state
    def pareto_front(self) -> list[FrontPoint]:
        """The non-dominated evaluated candidates."""
        return front_of(self.evaluated, self.objectives)

    def predicted_front(self) -> list[FrontPoint]:
        """The latest surrogate front: genomes with *predicted* objective values (``uid`` None)."""
        return list(self.predicted)

    @property
    def finished(self) -> bool:
        return self._finished

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            round=self.round,
            pending=self.pending.state_dict(),
            queue=[(g.vector.copy(), g.choices) for g in self.queue],
            evaluated=list(self.evaluated),
            predicted=list(self.predicted),
            finished=self._finished,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.round = int(state["round"])
        self.pending.load_state_dict(state["pending"])
        self.queue = [Genome(np.asarray(v), c) for v, c in state["queue"]]
        self.evaluated = list(state["evaluated"])
        self.predicted = list(state["predicted"])
        self._finished = bool(state["finished"])
