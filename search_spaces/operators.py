"""What a search space must know of a merge operator, and the checks a config gets against it.

The operator registry lives with the torch code, so it is imported lazily, once per space construction,
and only a torch-free snapshot (:class:`OperatorInfo`) is kept: spaces stay picklable and cheap. The input
rules mirror the merge planner's: an operator that uses a base model receives it apart from its inputs;
one that ignores bases merges a given base as one more input (with its own weight).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evomerge.errors import ConfigError
from evomerge.merge.params import REQUIRED, ParamSpec
from evomerge.plan import ScalarParameter
from search_spaces.config import ParamRange

DIALECT = "evomerge"
"""Dialect of every plan the spaces emit; parameter defaults are evomerge's."""


@dataclass(frozen=True)
class OperatorInfo:
    name: str
    params: tuple[ParamSpec, ...]
    inputs: tuple[str, ...]
    """Models the operator mixes, in plan order (a base it ignores included)."""
    base: str | None
    """The base model handed apart from the inputs; None when there is none or the operator ignores it."""

    def spec(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def refs_for(self, spec: ParamSpec) -> tuple[str, ...]:
        """The models that carry their own value of ``spec`` (none for a global parameter)."""
        if spec.scope == "global":
            return ()
        if spec.scope == "input" and self.base is not None:
            return (*self.inputs, self.base)
        return self.inputs

    def genes_per_model(self, name: str, rng: ParamRange) -> bool:
        spec = self.spec(name)
        assert spec is not None, name
        return spec.scope != "global" if rng.per_model is None else rng.per_model


def check_sources(sources: Sequence[str], path: str) -> None:
    if not sources:
        raise ConfigError("needs at least one source model", path)
    seen: set[str] = set()
    for ref in sources:
        if ref in seen:
            raise ConfigError(f"source model {ref!r} is listed twice", path)
        seen.add(ref)


def operator_info(name: str, sources: Sequence[str], base: str | None, path: str) -> OperatorInfo:
    """Look ``name`` up (``path`` names the config field) and check it can merge these models."""
    from evomerge.merge.operator import get_operator  # the registry imports torch; spaces do not

    spec = get_operator(name, path)
    uses_base = spec.base in ("required", "optional")
    if base is None and spec.base == "required":
        raise ConfigError(f"merge method {name!r} needs a base model and none is given", path)
    if base is not None and spec.base == "forbidden":
        raise ConfigError(f"merge method {name!r} does not take a base model, but {base!r} is given", path)
    if base is not None and uses_base:
        inputs = tuple(s for s in sources if s != base)
        separate: str | None = base
    else:
        inputs = tuple(dict.fromkeys([*sources, *([base] if base is not None else [])]))
        separate = None
    n = len(inputs)
    if n < spec.min_models or (spec.max_models is not None and n > spec.max_models):
        most = "any number" if spec.max_models is None else str(spec.max_models)
        raise ConfigError(f"merge method {name!r} merges {spec.min_models} to {most} model(s); got {n}", path)
    return OperatorInfo(spec.name, tuple(spec.params), inputs, separate)


def check_parameters(
    op: OperatorInfo,
    searched: Mapping[str, ParamRange],
    fixed: Mapping[str, ScalarParameter],
    path: str,
) -> None:
    """Searched (``path.parameters``) and fixed (``path.extra_parameters``) values must suit ``op``."""
    known = ", ".join(op_p.name for op_p in op.params) or "none"
    for name, rng in searched.items():
        where = f"{path}.parameters.{name}"
        spec = op.spec(name)
        if spec is None:
            raise ConfigError(f"merge method {op.name!r} has no parameter {name!r} (its parameters: {known})", where)
        if spec.type is not float:
            raise ConfigError(
                f"{name!r} is of type {spec.type.__name__}; only float parameters can be searched "
                f"(fix it in extra_parameters instead)", where)
        rng.checked(where)
        if rng.per_model and spec.scope == "global":
            raise ConfigError(f"{name!r} has one value for all models in {op.name!r}; per_model cannot be true",
                              f"{where}.per_model")
        for field, bound in (("low", rng.low), ("high", rng.high)):
            try:
                spec.check_range(bound)
            except ConfigError as exc:
                raise ConfigError(str(exc), f"{where}.{field}") from None
    for name, value in fixed.items():
        where = f"{path}.extra_parameters.{name}"
        spec = op.spec(name)
        if spec is None:
            raise ConfigError(f"merge method {op.name!r} has no parameter {name!r} (its parameters: {known})", where)
        if name in searched:
            raise ConfigError(f"{name!r} is searched (parameters.{name}) and fixed here; choose one", where)
        try:
            spec.check_range(spec.cast(value))
        except ConfigError as exc:
            raise ConfigError(str(exc), where) from None
    for spec in op.params:
        if spec.default_for(DIALECT) is REQUIRED and spec.name not in searched and spec.name not in fixed:
            raise ConfigError(
                f"merge method {op.name!r} needs {spec.name!r}: search it (parameters.{spec.name}) "
                f"or fix it (extra_parameters.{spec.name})", f"{path}.parameters")
