"""Pareto fronts and hypervolumes of evaluated candidates, computed with Optuna's own utilities.

Strategies that optimise several objectives (``optuna``, ``layerwise_zo``, ``map_pareto``) report their
result as a front of :class:`FrontPoint` values. Scores here are *signed* (larger is better, as returned by
:meth:`Strategy.scores`); Optuna's helpers minimise, so they are negated at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _is_pareto_front

from evomerge.types import Genome, Objective


@dataclass(frozen=True)
class FrontPoint:
    """One point of a front: objective values in each objective's own direction.

    ``uid`` is the evaluated candidate's uid; ``None`` for a point that is only predicted (MAP's surrogate
    front before evaluation).
    """

    genome: Genome
    values: dict[str, float]
    uid: str | None = None
    meta: dict[str, float] = field(default_factory=dict)

    def signed(self, objectives: Sequence[Objective]) -> np.ndarray:
        return np.array([o.signed(self.values[o.name]) for o in objectives], dtype=np.float64)


def non_dominated(signed_scores: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows no other row dominates (ties are kept on the front)."""
    scores = np.asarray(signed_scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"expected an (n, m) score matrix, got shape {scores.shape}")
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(_is_pareto_front(-scores, assume_unique_lexsorted=False), dtype=bool)


def hypervolume(signed_scores: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``signed_scores`` above the signed ``reference`` point.

    Points that do not strictly improve on the reference in every objective add nothing and are dropped.
    """
    scores = np.asarray(signed_scores, dtype=np.float64).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=np.float64)
    useful = scores[np.all(scores > ref, axis=1)]
    if useful.shape[0] == 0:
        return 0.0
    return float(compute_hypervolume(-useful, -ref))


def front_hypervolume(
    points: Sequence[FrontPoint], objectives: Sequence[Objective], reference: Sequence[float]
) -> float:
    """Hypervolume of a front given as points; ``reference`` is in the objectives' own directions."""
    signed_ref = [o.signed(float(r)) for o, r in zip(objectives, reference)]
    if not points:
        return 0.0
    return hypervolume(np.stack([p.signed(objectives) for p in points]), signed_ref)


def front_of(points: Sequence[FrontPoint], objectives: Sequence[Objective]) -> list[FrontPoint]:
    """The non-dominated subset of ``points``, in their given order."""
    if not points:
        return []
    mask = non_dominated(np.stack([p.signed(objectives) for p in points]))
    return [p for p, keep in zip(points, mask) if keep]
