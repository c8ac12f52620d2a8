"""Seeded, fixed, nested example subsets for multi-fidelity evaluation.

A subset is a prefix of one seeded permutation of the examples, so it is the same for every candidate
(scores stay comparable), and a larger fraction always contains a smaller one (a candidate promoted by
successive halving keeps the examples it was already scored on).
"""

from __future__ import annotations

import math

import numpy as np

from evomerge.errors import ConfigError
from evomerge.seeding import SeedTree


def check_fraction(fraction: float | None) -> float | None:
    """Validate a fidelity: None (all examples) or a number in (0, 1]."""
    if fraction is None:
        return None
    value = float(fraction)
    if not (0.0 < value <= 1.0):
        raise ConfigError(f"fidelity must be in (0, 1] or None, got {fraction!r}")
    return value


def subset_size(n: int, fraction: float) -> int:
    """How many of ``n`` examples a fraction keeps: at least one, rounded up."""
    return min(n, max(1, math.ceil(fraction * n - 1e-9)))


class SubsetSampler:
    """Per-key permutations drawn once from a seed tree; ``indices`` cuts a sorted prefix of them."""

    def __init__(self, seed_tree: SeedTree) -> None:
        self.seed_tree = seed_tree
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def order(self, key: str, n: int) -> np.ndarray:
        cached = self._orders.get((key, n))
        if cached is None:
            cached = self.seed_tree.generator(key).permutation(n)
            cached.setflags(write=False)
            self._orders[(key, n)] = cached
        return cached

    def indices(self, key: str, n: int, fraction: float | None) -> np.ndarray:
        """Sorted indices into ``range(n)``; all of them when ``fraction`` is None or 1."""
        if fraction is None or fraction >= 1.0 or n == 0:
            return np.arange(n)
        return np.sort(self.order(key, n)[: subset_size(n, fraction)])
