"""Pareto fronts and hypervolume, through Optuna's implementations (one place that touches its internals).

All inputs are *maximised* objective values (rows = points); Optuna works on minimised losses, so values
are negated at this boundary only.
"""

from __future__ import annotations

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _is_pareto_front


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (larger is better in every column)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError("values must be a 2-D array (points × objectives)")
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(_is_pareto_front(-values, assume_unique_lexsorted=False), dtype=bool)


def hypervolume(values: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``values`` above ``reference`` (maximisation; points below it count 0)."""
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if len(values) == 0:
        return 0.0
    keep = np.all(values > reference, axis=1)
    if not keep.any():
        return 0.0
    losses = -values[keep]
    front = losses[_is_pareto_front(losses, assume_unique_lexsorted=False)]
    return float(compute_hypervolume(front, -reference))
