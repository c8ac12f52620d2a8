"""PLeaS (Nasery et al., CVPR 2025): a whole-model merge by permutations and least squares, for MLP stacks.

``pleas_merge(states, activations, PleasSettings(width_ratio=...))`` with each model's linear-layer inputs
recorded by ``evomerge.statistics.activations.collect_activations`` on one shared calibration set.
"""

from evomerge.merge.pleas.matching import UnitGroups, correlation, kept_count, match_layer, match_units
from evomerge.merge.pleas.merge import PleasResult, PleasSettings, pleas_merge

__all__ = [
    "PleasResult",
    "PleasSettings",
    "UnitGroups",
    "correlation",
    "kept_count",
    "match_layer",
    "match_units",
    "pleas_merge",
]
