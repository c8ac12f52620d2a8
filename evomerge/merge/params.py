"""Parameter declarations of merge operators and their resolution for one tensor.

A recipe value can be global or per model, a gradient over depth, or a list of ``{filter, value}``
conditions (mergekit's rules, reproduced exactly so that mergekit recipes give mergekit's numbers):

* precedence, highest first: the model's own ``parameters`` (slice source, then model entry), the
  slice's, then the recipe's top-level ``parameters``, then the operator's default;
* a list of numbers is interpolated linearly at ``t`` (a layer's position in its slice, ``idx / (n-1)``;
  ``t = 0`` outside the layers); a list of non-numbers is indexed at ``int(t * (len-1))``;
* a condition applies when its filter is absent, ``"*"``, or a substring of the tensor name.

Pure Python: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evomerge.errors import ConfigError
from evomerge.plan import ConditionalParameter, ParameterSetting

Scope = Literal["global", "model", "input"]
"""``global``: one value per tensor; ``model``: one per non-base model; ``input``: one per input, base too."""

REQUIRED: Any = object()
"""A parameter without a default: recipes must set it."""
SAME: Any = object()
"""``mergekit_default`` sentinel: mergekit-dialect recipes use the same default as evomerge's."""


def evaluate_setting(tensor_name: str, setting: ParameterSetting | None, t: float, cast: Callable[[Any], Any]) -> Any:
    """Resolve gradients and filters of one setting for ``tensor_name`` at depth ``t`` (None = no match)."""
    if setting is None:
        return None
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return cast(setting)
    if not isinstance(setting, list) or not setting:
        return None
    if all(isinstance(e, (bool, int, float, str)) for e in setting):
        values = [cast(e) for e in setting]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        if abs(scaled - round(scaled)) < 1e-9:  # t = i/(n-1) must land exactly on point i (float round-off)
            scaled = float(round(scaled))
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return cast((1 - frac) * values[i0] + frac * values[i1])
    for cond in setting:
        if not isinstance(cond, ConditionalParameter):
            cond = ConditionalParameter.model_validate(cond)
        if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
            return evaluate_setting(tensor_name, cond.value, t, cast)
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One operator parameter: its scope, type, defaults per dialect and admissible range."""

    name: str
    type: type = float
    scope: Scope = "global"
    default: Any = REQUIRED
    mergekit_default: Any = SAME
    """Default in mergekit-dialect recipes (``REQUIRED``: mergekit makes it mandatory)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    doc: str = ""

    def default_for(self, dialect: str) -> Any:
        if dialect == "mergekit" and self.mergekit_default is not SAME:
            return self.mergekit_default
        return self.default

    def cast(self, value: Any) -> Any:
        where = f"parameter {self.name!r}"
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if self.type in (int, float):
            if isinstance(value, bool):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            try:
                num = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
            if not math.isfinite(num):
                raise ConfigError(f"{where} must be finite, got {value!r}")
            if self.type is int:
                if num != int(num):
                    raise ConfigError(f"{where} must be an integer, got {value!r}")
                return int(num)
            return num
        text = str(value)
        if self.choices is not None and text not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}; got {text!r}")
        return text

    def check_range(self, value: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        lo_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        hi_ok = self.high is None or value <= self.high
        if not (lo_ok and hi_ok):
            left = "(" if self.low_open else "["
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            raise ConfigError(f"parameter {self.name!r} must be in {left}{lo}, {hi}], got {value:g}")


@dataclass
class ResolvedParams:
    """Parameter values for one tensor: shared ones and per-model lists aligned with the operator inputs."""

    shared: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, list[Any]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    """``input``-scoped values of the base model (e.g. a linear weight when the base is also an input)."""

    def __getitem__(self, name: str) -> Any:
        return self.shared[name]

    def model(self, name: str) -> list[Any]:
        return self.per_model[name]


Settings = Mapping[str, ParameterSetting] | None


def resolve(
    specs: Sequence[ParamSpec],
    *,
    dialect: str,
    tensor_name: str,
    t: float,
    shared_sources: Iterable[Settings],
    model_sources: Sequence[Iterable[Settings]],
    base_sources: Iterable[Settings] | None = None,
    where: str = "",
) -> ResolvedParams:
    """Resolve every declared parameter of an operator for one tensor.

    ``model_sources[i]`` lists the settings that apply to non-base input *i*, highest precedence first
    (its own parameters, then the shared ones).
    """
    shared_list = list(shared_sources)
    out = ResolvedParams()

    def value_of(spec: ParamSpec, sources: Iterable[Settings], label: str) -> Any:
        for scope in sources:
            if scope is not None and spec.name in scope:
                value = evaluate_setting(tensor_name, scope[spec.name], t, spec.cast)
                if value is not None:
                    spec.check_range(value)
                    return value
        default = spec.default_for(dialect)
        if default is REQUIRED:
            raise ConfigError(f"missing required parameter {spec.name!r} for {label}")
        return default

    for spec in specs:
        if spec.scope == "global":
            out.shared[spec.name] = value_of(spec, shared_list, where or tensor_name)
        else:
            out.per_model[spec.name] = [
                value_of(spec, list(src), f"model #{i + 1} at {tensor_name}") for i, src in enumerate(model_sources)
            ]
            if spec.scope == "input" and base_sources is not None:
                out.base[spec.name] = value_of(spec, list(base_sources), f"the base model at {tensor_name}")
    return out


def known_parameter_names(specs: Iterable[ParamSpec]) -> set[str]:
    return {s.name for s in specs}
