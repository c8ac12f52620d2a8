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


def first_error(exc: ValidationError, source: str | None = None, prefix: str | None = None) -> ConfigError:
    """The first problem as one line: ``source: a.b.c: what is wrong`` (``prefix`` = the section's path)."""
    err = exc.errors()[0]
    loc = tuple(prefix.split(".") if prefix else ()) + tuple(err.get("loc", ()))
    if err.get("type", "") == "extra_forbidden" and loc:
        parent = format_loc(loc[:-1])
        msg = f"{parent + ': ' if parent else ''}unknown key {str(loc[-1])!r}"
    else:
        text = str(err.get("msg", "invalid value")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        where = format_loc(loc)
        msg = f"{where + ': ' if where else ''}{text}"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{source + ': ' if source else ''}{msg}{tail}")


def validate_model(cls: type[M], data: Any, source: str | None = None, prefix: str | None = None) -> M:
    """``cls.model_validate(data)`` with a one-line, field-naming error."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc, source, prefix) from None


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
