"""The search-space contract: how a genome decodes into a MergePlan and back.

A space declares its coordinates once: continuous dimensions (bounds, optional log scale) and categorical
dimensions (a list of options). Strategies only ever see :class:`~evomerge.types.Genome` values and the
space's *unit cube* view (every continuous coordinate mapped to [0, 1], log dimensions in log space), so
CMA-ES, Optuna and M2N2 need no knowledge of what a coordinate means. No torch here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evomerge.errors import ConfigError
from evomerge.plan import MergePlan
from evomerge.types import Genome


@dataclass(frozen=True)
class FloatDim:
    name: str
    low: float
    high: float
    log: bool = False
    init: float | None = None
    """Where a search starts when it needs one point (CMA-ES's x0); the middle of the range if None."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"bounds of {self.name!r} must be finite, got [{self.low}, {self.high}]")
        if self.low > self.high:
            raise ConfigError(f"bounds of {self.name!r}: low ({self.low}) > high ({self.high})")
        if self.log and self.low <= 0:
            raise ConfigError(f"log-scaled {self.name!r} needs low > 0, got {self.low}")

    def to_unit(self, x: float) -> float:
        if self.high == self.low:
            return 0.5
        if self.log:
            return (math.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, u))
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    @property
    def start(self) -> float:
        if self.init is not None:
            return float(self.init)
        return self.from_unit(0.5)


@dataclass(frozen=True)
class CategoricalDim:
    name: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 1:
            raise ConfigError(f"categorical {self.name!r} needs at least one option")


class SearchSpace(ABC):
    """Genome ↔ MergePlan. Subclasses fill ``float_dims``/``cat_dims`` and implement the two maps."""

    name: str = "abstract"

    def __init__(self, float_dims: Sequence[FloatDim], cat_dims: Sequence[CategoricalDim] = ()) -> None:
        self.float_dims = list(float_dims)
        self.cat_dims = list(cat_dims)

    # ------------------------------------------------------------------ shape
    @property
    def dimension(self) -> int:
        return len(self.float_dims)

    @property
    def lower(self) -> np.ndarray:
        return np.array([d.low for d in self.float_dims], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([d.high for d in self.float_dims], dtype=np.float64)

    @property
    def n_choices(self) -> list[int]:
        return [len(c.options) for c in self.cat_dims]

    # ------------------------------------------------------------------ unit cube
    def to_unit(self, genome: Genome) -> np.ndarray:
        return np.array([d.to_unit(float(x)) for d, x in zip(self.float_dims, genome.vector)], dtype=np.float64)

    def from_unit(self, u: np.ndarray, choices: Sequence[int] = ()) -> Genome:
        vec = np.array([d.from_unit(float(x)) for d, x in zip(self.float_dims, np.asarray(u).reshape(-1))])
        return Genome(vec, tuple(choices))

    def contains(self, genome: Genome, tol: float = 1e-9) -> bool:
        if genome.vector.shape != (self.dimension,) or len(genome.choices) != len(self.cat_dims):
            return False
        span = np.maximum(self.upper - self.lower, 1.0)
        inside = np.all(genome.vector >= self.lower - tol * span) and np.all(genome.vector <= self.upper + tol * span)
        cats_ok = all(0 <= c < n for c, n in zip(genome.choices, self.n_choices))
        return bool(inside and cats_ok)

    def clip(self, genome: Genome) -> Genome:
        return Genome(np.clip(genome.vector, self.lower, self.upper), genome.choices)

    def sample(self, rng: np.random.Generator) -> Genome:
        u = rng.random(self.dimension)
        choices = tuple(int(rng.integers(n)) for n in self.n_choices)
        return self.from_unit(u, choices)

    def start(self) -> Genome:
        """The search's default starting point (each dimension's ``init``, first option of categoricals)."""
        return Genome(np.array([d.start for d in self.float_dims]), tuple(0 for _ in self.cat_dims))

    def initial_points(self) -> list[Genome]:
        """Points a population-based search should seed its population with (e.g. the source models)."""
        return []

    # ------------------------------------------------------------------ mapping
    @abstractmethod
    def decode(self, genome: Genome) -> MergePlan | None:
        """The merge this genome stands for; ``None`` for direct spaces whose genome *is* the weights."""

    @abstractmethod
    def encode(self, plan: MergePlan) -> Genome:
        """The genome of a plan this space produced (``encode(decode(g)) == g``)."""

    def describe(self) -> dict[str, object]:
        return {
            "space": self.name,
            "float_dims": len(self.float_dims),
            "categorical_dims": len(self.cat_dims),
            "categories": {c.name: list(c.options) for c in self.cat_dims},
        }
