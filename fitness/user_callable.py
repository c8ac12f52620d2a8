"""``callable``: a user's own scoring function, named ``module:function`` or ``path/to/file.py:function``.

The function is called as ``function(model, tokenizer, **kwargs)`` and returns a number (one objective),
a mapping of objective names to numbers, or a :class:`~fitness.base.FitnessResult` (to add per-example
scores and metrics). Objective names and directions come from the config. A function with a ``fidelity``
parameter receives the current fidelity (a fraction, or None for all examples) and so supports
multi-fidelity; without one, it always scores everything.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.registry import load_dotted
from evomerge.types import Direction, Objective
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite
from fitness.registry import register_suite

_MAXIMIZE: Direction = "maximize"


class CallableConfig(FitnessConfig):
    name: str = "callable"
    function: str
    objectives: dict[str, Direction] = Field(default_factory=lambda: {"score": _MAXIMIZE}, min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


def resolve_function(spec: str, base_dir: Path) -> Callable[..., Any]:
    """Import ``spec``; a relative ``.py`` path is taken relative to ``base_dir``."""
    module, sep, attr = spec.rpartition(":")
    if sep and module.endswith(".py") and not Path(module).expanduser().is_absolute():
        spec = f"{base_dir / module}:{attr}"
    fn = load_dotted(spec)
    if not callable(fn):
        raise ConfigError(f"callable suite: {spec!r} is not callable")
    return fn


def _accepts_fidelity(fn: Callable[..., Any]) -> bool:
    try:
        return "fidelity" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@register_suite
class CallableSuite(FitnessSuite):
    name = "callable"
    Config = CallableConfig
    config: CallableConfig

    def __init__(self, config: CallableConfig, seed_tree: Any = None, base_dir: Any = None) -> None:
        super().__init__(config, seed_tree, base_dir)
        self.function = resolve_function(config.function, self.base_dir)
        self.supports_fidelity = _accepts_fidelity(self.function)

    def objectives(self) -> list[Objective]:
        return [Objective(name, direction) for name, direction in self.config.objectives.items()]

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        kwargs = dict(self.config.kwargs)
        if self.supports_fidelity:
            kwargs["fidelity"] = self.fidelity
        return self._to_result(self.function(model, tokenizer, **kwargs))

    def _to_result(self, value: Any) -> FitnessResult:
        names = list(self.config.objectives)
        where = f"callable suite {self.config.function!r}"
        if isinstance(value, FitnessResult):
            result = value
        elif isinstance(value, Mapping):
            unknown = sorted(set(map(str, value)) - set(names))
            if unknown:
                raise ValueError(f"{where} returned undeclared objective(s) {unknown}; declared: {names}")
            result = FitnessResult({str(k): _number(v, where) for k, v in value.items()})
        else:
            if len(names) != 1:
                raise ValueError(f"{where} returned one number but {len(names)} objectives are declared: {names}")
            result = FitnessResult({names[0]: _number(value, where)})
        missing = [n for n in names if n not in result.objectives]
        if missing:
            raise ValueError(f"{where} returned no value for objective(s) {missing}")
        return result


def _number(value: Any, where: str) -> float:
    """``value`` as a float; booleans and non-numbers are refused (a bool is almost always a bug)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, *_tensor_types())):
        raise TypeError(f"{where} must return numbers, got {type(value).__name__}")
    number: Any = value
    return float(number)


def _tensor_types() -> tuple[type, ...]:
    import numpy as np
    import torch

    return (np.generic, np.ndarray, torch.Tensor)
