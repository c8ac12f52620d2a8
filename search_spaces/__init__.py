"""Search spaces: how a genome (a float vector plus categorical choices) decodes into a MergePlan.

Importing the package registers the built-in spaces in :data:`SPACES`; :func:`build_space` builds one from
its config section. Built-in spaces: ``global``, ``layerwise``, ``method_choice``, ``m2n2``.
"""

# importing the space modules registers them
from search_spaces import global_space, layerwise, m2n2, method_choice
from search_spaces.base import CategoricalDim, FloatDim, SearchSpace
from search_spaces.registry import SPACES, ConfigurableSpace, build_space, register_space

__all__ = [
    "SPACES",
    "CategoricalDim",
    "ConfigurableSpace",
    "FloatDim",
    "SearchSpace",
    "build_space",
    "global_space",
    "layerwise",
    "m2n2",
    "method_choice",
    "register_space",
]
