"""M2N2 from scratch: the genome is the flat weight vector of a small model, in layout order.

There is no merge plan: :meth:`ParameterVectorSpace.decode` returns None and the evaluator writes
:meth:`ParameterVectorSpace.assign`'s arrays into its resident model. Tensors are laid end to end in the
layout's network order, each flattened in C order, so a split point in the genome is a split point in
layer order. The initial population (random initialisations, built by the caller with torch) is handed
over as flat numpy vectors, the first of them doubling as :meth:`ParameterVectorSpace.start`; this module
never imports torch. Every coordinate has the same bounds, so the unit-cube maps are vectorised instead of
going through one :class:`FloatDim` per weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.layout import ModelLayout
from evomerge.plan import MergePlan
from evomerge.types import Genome
from search_spaces.base import FloatDim
from search_spaces.m2n2 import M2N2Config, M2N2Space


class ParameterVectorSpace(M2N2Space):
    def __init__(
        self, config: M2N2Config, layout: ModelLayout, initial_vectors: Sequence[np.ndarray] | None = None,
        path: str = "search_space",
    ) -> None:
        if config.granularity != "tensor":
            raise ConfigError("granularity applies to mode 'coefficients' only", f"{path}.granularity")
        self.low, self.high = config.bounds(path)
        self.layout = layout
        self.shapes = [(t.name, t.shape) for t in layout.tensors]
        sizes = [t.numel for t in layout.tensors]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        n = int(self.offsets[-1])
        if n == 0:
            raise ConfigError("the model layout has no parameters", f"{path}.mode")
        dims = [FloatDim(f"{name}[{i}]", self.low, self.high) for name, shape in self.shapes
                for i in range(int(np.prod(shape, dtype=np.int64)))]
        super().__init__(dims)
        self._lower = np.full(n, self.low)
        self._upper = np.full(n, self.high)
        self._initial = [self._initial_genome(v, i, path) for i, v in enumerate(initial_vectors or [])]

    def _initial_genome(self, vector: np.ndarray, i: int, path: str) -> Genome:
        flat = np.asarray(vector, dtype=np.float64).reshape(-1)
        if flat.shape != (self.dimension,):
            raise IncompatibleModelsError(
                f"initial vector {i} has {flat.size} values; the model has {self.dimension} parameters")
        if not np.all(np.isfinite(flat)):
            raise ConfigError(f"initial vector {i} has non-finite values")
        if flat.min() < self.low or flat.max() > self.high:
            raise ConfigError(f"initial vector {i} spans [{flat.min():g}, {flat.max():g}], outside the bounds "
                              f"[{self.low:g}, {self.high:g}]; widen them", f"{path}.low")
        return Genome(flat)

    # ------------------------------------------------------------------ vectorised unit cube
    @property
    def lower(self) -> np.ndarray:
        return self._lower

    @property
    def upper(self) -> np.ndarray:
        return self._upper

    def to_unit(self, genome: Genome) -> np.ndarray:
        if self.high == self.low:
            return np.full(self.dimension, 0.5)
        return (genome.vector - self.low) / (self.high - self.low)

    def from_unit(self, u: np.ndarray, choices: Sequence[int] = ()) -> Genome:
        clipped = np.clip(np.asarray(u, dtype=np.float64).reshape(-1), 0.0, 1.0)
        return Genome(self.low + clipped * (self.high - self.low), tuple(choices))

    def start(self) -> Genome:
        """The first random initialisation (the reference starts CMA-ES there), else the box's centre.

        The centre is the all-zero network when the bounds are symmetric: every hidden unit alike.
        """
        if self._initial:
            return self._initial[0]
        return Genome(np.full(self.dimension, 0.5 * (self.low + self.high)))

    def block_starts(self) -> np.ndarray:
        return self.offsets[:-1].copy()

    def initial_points(self) -> list[Genome]:
        return list(self._initial)

    # ------------------------------------------------------------------ genome <-> weights
    def decode(self, genome: Genome) -> MergePlan | None:
        return None

    def encode(self, plan: MergePlan) -> Genome:
        raise ConfigError("mode 'parameters' evolves weights directly and has no merge plan; "
                          "use encode_state() on the model's weights")

    def assign(self, genome: Genome, dtype: npt.DTypeLike = np.float64) -> dict[str, np.ndarray]:
        """Tensor name → array of its shape, in layout order; writable views of one fresh buffer."""
        flat = np.array(self.checked(genome), dtype=dtype)
        return {name: flat[self.offsets[i]:self.offsets[i + 1]].reshape(shape)
                for i, (name, shape) in enumerate(self.shapes)}

    def encode_state(self, state: Mapping[str, np.ndarray]) -> Genome:
        """The genome of a model's weights (inverse of :meth:`assign`)."""
        missing = [name for name, _ in self.shapes if name not in state]
        extra = sorted(set(state) - {name for name, _ in self.shapes})
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise IncompatibleModelsError(f"weights do not match the model layout: {detail}")
        parts = []
        for name, shape in self.shapes:
            array = np.asarray(state[name], dtype=np.float64)
            if array.shape != tuple(shape):
                raise IncompatibleModelsError(f"{name} has shape {list(array.shape)}, the layout says {list(shape)}")
            parts.append(array.reshape(-1))
        return Genome(np.concatenate(parts))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "mode": "parameters", "tensors": len(self.shapes),
                "bounds": [self.low, self.high]}
