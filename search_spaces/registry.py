"""The search-space registry and the one factory the rest of evomerge calls.

A space is built from its config section, the source model references exactly as the user's config
spells them, the optional base model reference and the sources' :class:`~evomerge.layout.ModelLayout`
(read from headers). Third-party spaces register under the ``evomerge.search_spaces`` entry-point group
or are named by dotted path (``package.module:Class``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout
from evomerge.registry import Registry
from evomerge.types import Genome
from search_spaces.base import SearchSpace
from search_spaces.config import SpaceConfig, parse_section


class ConfigurableSpace(SearchSpace):
    """A space that the registry can build from its config section."""

    Config: ClassVar[type[SpaceConfig]]

    @classmethod
    def from_config(
        cls,
        config: Any,
        sources: Sequence[str],
        base: str | None,
        layout: ModelLayout,
        *,
        initial_vectors: Sequence[np.ndarray] | None = None,
        path: str = "search_space",
    ) -> SearchSpace:
        """Build and validate the space; ``path`` prefixes error field paths.

        The default parses the section with ``cls.Config`` and calls ``cls(config, sources, base, layout,
        path)``; spaces built differently (from initial vectors, say) override it.
        """
        build: Callable[..., SearchSpace] = cls  # concrete spaces take (config, sources, base, layout, path)
        return build(parse_section(cls.Config, config, path), sources, base, layout, path)

    def checked(self, genome: Genome) -> np.ndarray:
        """The genome's vector, after checking that it has this space's shape (a programming error if not)."""
        if genome.vector.shape != (self.dimension,) or len(genome.choices) != len(self.cat_dims):
            raise ValueError(
                f"genome of shape {genome.vector.shape} with {len(genome.choices)} choice(s) does not fit the "
                f"{self.name!r} space ({self.dimension} float(s), {len(self.cat_dims)} choice(s))")
        for c, n in zip(genome.choices, self.n_choices):
            if not 0 <= c < n:
                raise ValueError(f"choice index {c} out of range 0..{n - 1}")
        return genome.vector


SPACES: Registry[type[ConfigurableSpace]] = Registry("search space", entry_point_group="evomerge.search_spaces")


def register_space(cls: type[ConfigurableSpace]) -> type[ConfigurableSpace]:
    SPACES.register(cls.name, cls)
    return cls


def build_space(
    config: Mapping[str, Any] | SpaceConfig,
    sources: Sequence[str],
    base: str | None,
    layout: ModelLayout,
    *,
    initial_vectors: Sequence[np.ndarray] | None = None,
    key: str = "search_space",
) -> SearchSpace:
    """The space a config section names, validated against the sources and their layout.

    ``initial_vectors`` are only used by spaces whose genome is the model's weights (``m2n2`` in
    ``parameters`` mode): flat float vectors in layout order, one per initial population member.
    """
    name = config.name if isinstance(config, SpaceConfig) else config.get("name") if isinstance(config, Mapping) else None
    if not isinstance(name, str):
        raise ConfigError(f"needs a 'name'; known search spaces: {', '.join(SPACES.names())}", f"{key}.name")
    cls = SPACES.get(name, f"{key}.name")
    if not (isinstance(cls, type) and issubclass(cls, ConfigurableSpace)):
        raise ConfigError(f"{name!r} is not a search space class (need a ConfigurableSpace subclass)", f"{key}.name")
    parsed = parse_section(cls.Config, config, key)
    return cls.from_config(parsed, list(sources), base, layout, initial_vectors=initial_vectors, path=key)
