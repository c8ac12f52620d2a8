"""``m2n2``: the genome spaces of Natural Niches merging (M2N2, Abrantes et al., GECCO 2025).

M2N2 crosses two parents with a random split point over parameters flattened *in layer order*, so both
modes keep the genome in network order:

* ``mode: coefficients`` (merging pretrained sources): a mixing coefficient per block of parameters and
  source model, block-major (:mod:`search_spaces.m2n2_coefficients`);
* ``mode: parameters`` (evolution from scratch, the paper's MNIST experiment): the genome is the model's
  flat weight vector (:mod:`search_spaces.m2n2_parameters`).

Both expose :meth:`M2N2Space.block_starts`, the genome indices where a block (a tensor, or a layer)
begins, for strategies that want split points on block boundaries.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from evomerge.layout import ModelLayout
from search_spaces.config import SpaceConfig, checked_bounds, parse_section
from search_spaces.registry import ConfigurableSpace, register_space

DEFAULT_BOUNDS = {"coefficients": (0.0, 1.0), "parameters": (-10.0, 10.0)}


class M2N2Config(SpaceConfig):
    name: Literal["m2n2"] = "m2n2"
    mode: Literal["coefficients", "parameters"] = "coefficients"
    granularity: Literal["tensor", "layer"] = "tensor"
    """``coefficients`` mode: one coefficient row per tensor, or per layer (embeddings and head are one
    block each)."""
    low: float | None = None
    """Lower bound of every coordinate; 0 for coefficients, -10 for parameters if absent."""
    high: float | None = None
    """Upper bound of every coordinate; 1 for coefficients (above 1 allows extrapolation), 10 for parameters."""

    def bounds(self, path: str) -> tuple[float, float]:
        low_d, high_d = DEFAULT_BOUNDS[self.mode]
        low = low_d if self.low is None else self.low
        high = high_d if self.high is None else self.high
        return checked_bounds(low, high, path)


@register_space
class M2N2Space(ConfigurableSpace):
    """Registry entry for both modes; ``from_config`` returns the mode's space."""

    name = "m2n2"
    Config = M2N2Config

    @classmethod
    def from_config(
        cls, config: Any, sources: Sequence[str], base: str | None, layout: ModelLayout, *,
        initial_vectors: Sequence[np.ndarray] | None = None, path: str = "search_space",
    ) -> M2N2Space:
        from search_spaces.m2n2_coefficients import CoefficientSpace  # subclasses import this module
        from search_spaces.m2n2_parameters import ParameterVectorSpace

        parsed = parse_section(M2N2Config, config, path)
        if parsed.mode == "coefficients":
            return CoefficientSpace(parsed, sources, base, layout, path)
        return ParameterVectorSpace(parsed, layout, initial_vectors, path)

    @abstractmethod
    def block_starts(self) -> np.ndarray:
        """Genome indices where each block begins (ascending, starting at 0)."""
