"""Vectorised unit-cube view of a search space's continuous coordinates.

:meth:`SearchSpace.to_unit` / :meth:`SearchSpace.from_unit` loop over dimensions in Python, which is fine for
a few hundred merge coefficients but slow for a from-scratch parameter vector of 10^5 floats. This helper
applies the same maps (log dimensions in log space, a degenerate range maps to 0.5, unit values clipped to
[0, 1]) with numpy, once per genome.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evomerge.types import Genome
from search_spaces.base import SearchSpace


class UnitCube:
    """The continuous part of ``space`` as [0, 1]^d, plus its categorical option counts."""

    def __init__(self, space: SearchSpace) -> None:
        dims = space.float_dims
        self.dimension = len(dims)
        self.log = np.array([d.log for d in dims], dtype=bool)
        low = np.array([d.low for d in dims], dtype=np.float64)
        high = np.array([d.high for d in dims], dtype=np.float64)
        self.low = np.where(self.log, np.log(np.where(self.log, low, 1.0)), low)
        self.high = np.where(self.log, np.log(np.where(self.log, high, 1.0)), high)
        self.span = self.high - self.low
        self.degenerate = self.span == 0
        self.n_choices = list(space.n_choices)

    def to_unit(self, vector: np.ndarray) -> np.ndarray:
        x = np.asarray(vector, dtype=np.float64)
        x = np.where(self.log, np.log(np.where(self.log, np.maximum(x, 1e-300), 1.0)), x)
        span = np.where(self.degenerate, 1.0, self.span)
        return np.where(self.degenerate, 0.5, (x - self.low) / span)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        x = self.low + u * self.span
        return np.where(self.log, np.exp(x), x)

    def genome(self, u: np.ndarray, choices: Sequence[int] = ()) -> Genome:
        """The genome at unit-cube point ``u`` with categorical ``choices``."""
        return Genome(self.from_unit(u), tuple(int(c) for c in choices))

    def sample_choices(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.integers(n)) for n in self.n_choices)
