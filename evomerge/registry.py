"""Registries by name for operators, strategies, fitness suites, search spaces and trackers.

A registry maps a name to a factory. Third-party packages add entries through the Python entry-point group
given at construction (``evomerge.operators`` ...), loaded lazily on the first lookup, or a config can name
an object by dotted path (``package.module:attribute``). Unknown names raise
:class:`~evomerge.errors.UnknownNameError`, which lists the known ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from evomerge.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def load_dotted(spec: str) -> object:
    """Import ``module:attr`` (or ``module.attr``); the module may also be a path to a ``.py`` file."""
    if ":" in spec:
        module_name, _, attr = spec.rpartition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"expected 'module:attribute', got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"file not found: {path}")
            mod_key = f"_evomerge_user_{abs(hash(str(path)))}"
            module = sys.modules.get(mod_key)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(mod_key, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise ConfigError(f"cannot import {path}")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[mod_key] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module_name!r} (from {spec!r}): {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from exc


def is_dotted(name: str) -> bool:
    """True for names that look like an import path rather than a registered short name."""
    return ":" in name


class Registry(Generic[T]):
    """Name → object, with entry-point discovery and dotted-path fallback."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; used bare (``reg.register(n, obj)``) or as a decorator."""

        def add(item: T) -> T:
            if name in self._items and not replace and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        if obj is not None:
            return add(obj)
        return add

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                loaded = ep.load()
                # a plugin module may register itself on import (a decorator); keep that registration
                self._items.setdefault(ep.name, loaded)
            except Exception as exc:  # a broken plugin must not break the tool
                print(f"warning: could not load {self.kind} plugin {ep.name!r}: {exc}", file=sys.stderr)

    def get(self, name: str, path: str | None = None) -> T:
        if name in self._items:
            return self._items[name]
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        if is_dotted(name):
            obj = load_dotted(name)
            return obj  # type: ignore[return-value]
        raise UnknownNameError(self.kind, name, self.names(), path)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
