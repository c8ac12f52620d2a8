"""Turn pydantic validation failures and YAML problems into one-line :class:`ConfigError`s.

Users see ``recipe.yaml: models.1.parameters.density: must be in (0, 1]`` rather than a traceback, so
every loader in the project goes through :func:`validate_model` and :func:`load_yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evomerge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def first_error(exc: ValidationError, source: str | None = None) -> ConfigError:
    err = exc.errors()[0]
    loc = format_loc(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        key = loc.rsplit(".", 1)[-1]
        parent = loc.rsplit(".", 1)[0] if "." in loc else "top level"
        msg = f"unknown key {key!r} (in {parent})"
    else:
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    prefix = f"{source}: " if source else ""
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{prefix}{loc + ': ' if loc else ''}{msg}{tail}")


def validate_model(cls: type[M], data: Any, source: str | None = None) -> M:
    """``cls.model_validate(data)`` with a one-line, field-naming error."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc, source) from None


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"file not found: {p}")
    try:
        with p.open() as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}{where}: invalid YAML: {problem}") from None


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
