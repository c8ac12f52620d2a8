"""Quadratic response surfaces, MAP's surrogate of a metric as a function of merge coefficients.

``q(x) = β₀ + Σ_i β_i x_i + Σ_{i≤j} β_ij x_i x_j``, fitted per objective by least squares (numpy's
minimum-norm solution, so fewer points than features still give a usable, if crude, surrogate).
"""

from __future__ import annotations

import numpy as np


def n_features(dimension: int) -> int:
    return 1 + dimension + dimension * (dimension + 1) // 2


def quadratic_features(x: np.ndarray) -> np.ndarray:
    """Rows ``[1, x_1..x_d, x_i·x_j for i ≤ j]`` for each row of ``x`` (n, d)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rows, cols = np.triu_indices(x.shape[1])
    return np.hstack([np.ones((x.shape[0], 1)), x, x[:, rows] * x[:, cols]])


class QuadraticSurrogate:
    """One quadratic per objective, sharing the feature map."""

    def __init__(self, coef: np.ndarray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)  # (n_features, n_objectives)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> QuadraticSurrogate:
        """Least-squares fit of ``y`` (n, m) on the quadratic features of ``x`` (n, d)."""
        features = quadratic_features(x)
        targets = np.asarray(y, dtype=np.float64).reshape(features.shape[0], -1)
        coef, *_ = np.linalg.lstsq(features, targets, rcond=None)
        return cls(coef)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return quadratic_features(x) @ self.coef
