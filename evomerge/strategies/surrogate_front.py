"""The Pareto set of cheap surrogate objectives over the unit cube (plus categorical choices).

Used by MAP once its quadratics are fitted; no model is evaluated here. Two stages:

1. **NSGA-II** (Optuna) explores globally, categorical choices included, seeded with known good points.
2. **Chebyshev polish**: NSGA-II converges slowly onto the front, so every point it returns is pushed
   along its own ray from the utopia point: ``min s`` s.t. ``w_k·(z_k − q_k(x)) ≤ s`` for all k, with
   ``w_k = 1/(z_k − q_k(x₀))`` (SLSQP, categorical choices fixed). The result dominates or equals the
   start, so polishing never loses ground. With one objective only the best point is polished (a plain
   maximisation).

Objectives are *signed* (larger is better) throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from scipy.optimize import minimize

from evomerge.strategies.pareto import non_dominated

Point = tuple[np.ndarray, tuple[int, ...]]
"""A unit-cube vector and its categorical choices."""


@dataclass(frozen=True)
class SurrogateProblem:
    predict: Callable[[np.ndarray, Sequence[int]], np.ndarray]
    """Signed predicted objectives at one point (unit vector, choices)."""
    dimension: int
    n_choices: Sequence[int]
    n_objectives: int


def nsga2_points(
    problem: SurrogateProblem, seeds: Sequence[Point], seed: int, trials: int, population: int
) -> list[tuple[Point, np.ndarray]]:
    """Every point NSGA-II evaluated, with its predicted values."""
    dists: dict[str, BaseDistribution] = {
        f"u{i}": FloatDistribution(0.0, 1.0) for i in range(problem.dimension)
    }
    dists.update({f"c{j}": CategoricalDistribution(list(range(k))) for j, k in enumerate(problem.n_choices)})
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    study = optuna.create_study(directions=["maximize"] * problem.n_objectives, sampler=sampler)
    for unit, choices in seeds[:population]:
        params: dict[str, float | int] = {f"u{i}": float(v) for i, v in enumerate(unit)}
        params.update({f"c{j}": int(c) for j, c in enumerate(choices)})
        study.enqueue_trial(params)
    out = []
    for _ in range(trials):
        trial = study.ask(dists)
        unit = np.array([trial.params[f"u{i}"] for i in range(problem.dimension)])
        choices = tuple(int(trial.params[f"c{j}"]) for j in range(len(problem.n_choices)))
        values = problem.predict(unit, choices)
        study.tell(trial, values.tolist())
        out.append(((unit, choices), values))
    return out


def polish(problem: SurrogateProblem, point: Point, utopia: np.ndarray) -> tuple[Point, np.ndarray]:
    """Move ``point`` toward the utopia point along its Chebyshev ray; keep it if that does not help."""
    unit, choices = point
    start = problem.predict(unit, choices)
    if problem.dimension == 0:
        return point, start
    weights = 1.0 / np.maximum(utopia - start, 1e-12)

    def gap(xs: np.ndarray) -> np.ndarray:  # ≥ 0 where the point is within s of the utopia, per objective
        return xs[-1] - weights * (utopia - problem.predict(np.clip(xs[:-1], 0.0, 1.0), choices))

    result = minimize(
        lambda xs: xs[-1],
        np.append(unit, 1.0),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * problem.dimension + [(None, None)],
        constraints=[{"type": "ineq", "fun": gap}],
        options={"maxiter": 100, "ftol": 1e-10},
    )
    moved = np.clip(result.x[:-1], 0.0, 1.0)
    values = problem.predict(moved, choices)
    if np.all(values >= start - 1e-12):
        return (moved, choices), values
    return point, start


def surrogate_front(
    problem: SurrogateProblem, seeds: Sequence[Point], seed: int, trials: int, population: int
) -> list[tuple[Point, np.ndarray]]:
    """The predicted front, sorted by the first objective (best first for one objective)."""
    explored = nsga2_points(problem, seeds, seed, trials, population)
    values = np.stack([v for _, v in explored])
    if problem.n_objectives == 1:
        order = np.argsort(-values[:, 0], kind="stable")
        ranked = [explored[i] for i in order]
        return [polish(problem, ranked[0][0], ranked[0][1] + 1.0), *ranked[1:]]
    front = [explored[i] for i in np.flatnonzero(non_dominated(values))]
    span = np.maximum(values.max(axis=0) - values.min(axis=0), 1e-9)
    utopia = np.stack([v for _, v in front]).max(axis=0) + 0.05 * span
    polished = [polish(problem, p, utopia) for p, _ in front]
    keep = non_dominated(np.stack([v for _, v in polished]))
    result = [polished[i] for i in np.flatnonzero(keep)]
    return sorted(result, key=lambda item: float(item[1][0]))
