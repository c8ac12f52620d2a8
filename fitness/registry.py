"""The fitness-suite registry and the one function that turns a YAML mapping into a ready suite.

``fitness:`` in a run config is a mapping with a ``name`` (a registered suite, an entry point of the
``evomerge.fitness`` group, or ``package.module:SuiteClass``) and that suite's options. Validation happens
here, at config load: an unknown suite lists the known ones, an unknown option is named, with a
suggestion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.registry import Registry
from evomerge.seeding import SeedTree
from evomerge.validation import validate_model
from fitness.base import FitnessConfig, FitnessSuite

FITNESS: Registry[type[FitnessSuite]] = Registry("fitness suite", entry_point_group="evomerge.fitness")


def register_suite(cls: type[FitnessSuite]) -> type[FitnessSuite]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    FITNESS.register(cls.name, cls)
    return cls


def suite_class(name: str, path: str = "fitness") -> type[FitnessSuite]:
    cls = FITNESS.get(name, path=f"{path}.name")
    if not (isinstance(cls, type) and issubclass(cls, FitnessSuite)):
        raise ConfigError(f"{name!r} is not a FitnessSuite subclass", f"{path}.name")
    return cls


def suite_config(data: Mapping[str, Any] | FitnessConfig, path: str = "fitness") -> FitnessConfig:
    """Validate a ``fitness:`` mapping into its suite's config model (or pass a config model through)."""
    if isinstance(data, FitnessConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping with a 'name', got {type(data).__name__}", path)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"missing suite 'name'; known fitness suites: {', '.join(FITNESS.names())}", path)
    return validate_model(suite_class(name, path).Config, dict(data), prefix=path)


def build_suite(
    config: Mapping[str, Any] | FitnessConfig,
    seed_tree: SeedTree | int | None = None,
    base_dir: str | Path | None = None,
    path: str = "fitness",
) -> FitnessSuite:
    """A suite from its config; ``base_dir`` anchors relative paths (normally the config file's folder)."""
    cfg = suite_config(config, path)
    tree = seed_tree if isinstance(seed_tree, SeedTree) else SeedTree(seed_tree)
    return suite_class(cfg.name, path)(cfg, seed_tree=tree, base_dir=base_dir)
