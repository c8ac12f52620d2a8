"""Config sections of the search spaces and the range of one searched parameter.

Every space reads a frozen pydantic section (``search_space:`` in a run config) whose ``name`` picks the
space. Checks that need no model or operator knowledge live on the models themselves; checks against the
operator and the sources (``ParamRange.checked``) run when the space is built, and every failure names
the field, e.g. ``search_space.parameters.density.low``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, create_model

from evomerge.errors import ConfigError
from evomerge.plan import ScalarParameter
from evomerge.validation import validate_model
from search_spaces.base import FloatDim


def _group_count(value: Any) -> Any:
    if value == "per_layer" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"must be a positive integer or 'per_layer', got {value!r}")


GroupCount: TypeAlias = Annotated[int | Literal["per_layer"], BeforeValidator(_group_count)]
"""Number of contiguous layer groups that share genes, or one group per layer."""

Outside: TypeAlias = Literal["adjacent", "own"]
"""How tensors outside the layers (embeddings; final norm and head) get their values: ``adjacent`` = like
the first (embeddings) or last (final norm, head) layer group, ``own`` = genes of their own."""

ExtraParameters: TypeAlias = dict[str, ScalarParameter]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SpaceConfig(Section):
    """Base of every space's section; subclasses pin ``name`` to their registry name."""

    name: str


class ParamRange(Section):
    """One searched operator parameter: its bounds, scale, starting value and whether it is per model."""

    low: float = 0.0
    high: float = 1.0
    log: bool = False
    init: float | None = None
    """Where a search that needs one point starts (CMA-ES's x0); the middle of the range if absent."""
    per_model: bool | None = None
    """One gene per input model (true), one shared by all (false), or as the operator declares (absent)."""

    def checked(self, path: str) -> ParamRange:
        """This range, after checks that name the offending field (``path.low`` ...)."""
        if self.low > self.high:
            raise ConfigError(f"low ({self.low:g}) is above high ({self.high:g})", f"{path}.low")
        if self.log and self.low <= 0:
            raise ConfigError(f"a log-scaled range needs low > 0, got {self.low:g}", f"{path}.low")
        if self.init is not None and not (self.low <= self.init <= self.high):
            raise ConfigError(f"init {self.init:g} is outside [{self.low:g}, {self.high:g}]", f"{path}.init")
        return self

    def dim(self, name: str) -> FloatDim:
        return FloatDim(name, float(self.low), float(self.high), self.log, self.init)


def checked_bounds(low: float, high: float, path: str) -> tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"bounds must be finite, got [{low:g}, {high:g}]", f"{path}.low")
    if low > high:
        raise ConfigError(f"low ({low:g}) is above high ({high:g})", f"{path}.low")
    return low, high


C = TypeVar("C", bound=SpaceConfig)


@cache
def _wrapper(config_cls: type[SpaceConfig], key: str) -> type[BaseModel]:
    return create_model(f"{config_cls.__name__}Section", **{key: (config_cls, ...)})  # type: ignore[call-overload]


def parse_section(config_cls: type[C], data: Mapping[str, Any] | SpaceConfig, key: str = "search_space") -> C:
    """Validate ``data`` as ``config_cls``; errors read ``search_space.<field>: <problem>``.

    ``key`` is the section's name in the run config (an identifier), the first element of error paths.
    """
    if isinstance(data, config_cls):
        return data
    if isinstance(data, SpaceConfig):
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping with at least 'name', got {type(data).__name__}", key)
    wrapped = validate_model(_wrapper(config_cls, key), {key: dict(data)})
    value = getattr(wrapped, key)
    assert isinstance(value, config_cls)
    return value
