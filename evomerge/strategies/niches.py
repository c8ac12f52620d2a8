"""The math of Natural Niches (M2N2, Abrantes, Lange & Tang 2025), as pure numpy functions.

Notation: an archive of N genomes, each with a non-negative score on each of J resources (data points);
``scores`` is the (N, J) matrix. Checked against the paper and the reference implementation
(SakanaAI/natural_niches: ``sample_parents``, ``update_archive``, ``slerp_w_splitpoint``):

* competition: resource j has capacity c_j, shared among the archive in proportion to score,
  ``shared[k, j] = c_j · s_kj / z_j^α`` with ``z_j = Σ_k s_kj`` (a resource nobody scores on, z_j = 0,
  is divided by 1 instead: it gives nothing to anybody); fitness ``f_k = Σ_j shared[k, j]``. α = 1 is full
  sharing, α = 0 plain (capacity-weighted) accuracy.
* attraction: partner B of parent A is drawn with probability ∝ ``Σ_j max(shared[B, j] − shared[A, j], 0)``,
  i.e. what B gains where A is weak, weighted by how contested each point is (ALGORITHMS.md writes the
  weight as c_j/(z_j + ε), the α = 1 case of the same expression).
* crossover with a split point k and ratio w: coordinates before k take weight w on B (1 − w on A), those
  from k on take 1 − w, mixed by slerp (one angle for the whole vector) or linearly.
"""

from __future__ import annotations

import numpy as np


def shared_scores(scores: np.ndarray, alpha: float, capacity: np.ndarray | float = 1.0) -> np.ndarray:
    """Each member's share of each resource: ``c_j · s_kj / z_j^α``."""
    s = np.asarray(scores, dtype=np.float64)
    z = s.sum(axis=0)
    z = np.where(z > 0, z, 1.0) ** alpha
    return s * (np.asarray(capacity, dtype=np.float64) / z)[None, :]


def competition_fitness(scores: np.ndarray, alpha: float, capacity: np.ndarray | float = 1.0) -> np.ndarray:
    """Resource-shared fitness of every archive member (larger is better)."""
    return shared_scores(scores, alpha, capacity).sum(axis=1)


def attraction(shared: np.ndarray, parent: int) -> np.ndarray:
    """How much each member complements ``parent``: its summed share gain where ``parent`` is weaker."""
    return np.maximum(shared - shared[parent][None, :], 0.0).sum(axis=1)


def proportional(weights: np.ndarray) -> np.ndarray:
    """Selection probabilities ∝ ``weights``; uniform when they are all zero."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(w.size, 1.0 / w.size)
    return w / total


def sample_parents(rng: np.random.Generator, shared: np.ndarray, use_matchmaker: bool) -> tuple[int, int]:
    """Parent A ∝ fitness; parent B ∝ attraction to A (or ∝ fitness without the matchmaker)."""
    fit_probs = proportional(shared.sum(axis=1))
    n = fit_probs.size
    if not use_matchmaker:
        a, b = rng.choice(n, size=2, p=fit_probs)
        return int(a), int(b)
    a = int(rng.choice(n, p=fit_probs))
    gain = attraction(shared, a)
    b = int(rng.choice(n, p=proportional(gain if gain.sum() > 0 else shared.sum(axis=1))))
    return a, b


def mixing_weights(dimension: int, w: float, split: int | None) -> np.ndarray:
    """Per-coordinate weight of parent B: ``w`` before ``split``, ``1 − w`` from it on (``w`` everywhere
    without a split point)."""
    weights = np.full(dimension, float(w))
    if split is not None:
        weights[int(split) :] = 1.0 - float(w)
    return weights


def interpolate(weights: np.ndarray, a: np.ndarray, b: np.ndarray, method: str = "slerp") -> np.ndarray:
    """``(1 − t)·a + t·b`` per coordinate, or its spherical version with the angle of the whole vectors.

    Slerp falls back to linear when either vector is zero or they are (anti)parallel within 1e-6, as the
    reference does.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(weights, dtype=np.float64)
    if method == "slerp":
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na > 0 and nb > 0:
            omega = float(np.arccos(np.clip(np.dot(a / na, b / nb), -1.0, 1.0)))
            sin_omega = float(np.sin(omega))
            if sin_omega > 1e-6:
                return (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / sin_omega
    elif method != "linear":
        raise ValueError(f"unknown mixing {method!r}; known: linear, slerp")
    return (1.0 - t) * a + t * b


def replacement_index(scores: np.ndarray, alpha: float, capacity: np.ndarray | float = 1.0) -> int:
    """Row with the lowest competition fitness among archive + child (the child is the last row).

    The fitness is computed with the child taking part in the competition. Ties go to the earliest row, so
    a child that only ties with the weakest member replaces it, as in the reference code.
    """
    return int(np.argmin(competition_fitness(scores, alpha, capacity)))
