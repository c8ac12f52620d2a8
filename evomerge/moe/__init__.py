"""Mixture-of-experts expert merging: fewer experts per sparse layer, by MC-SMoE or Sub-MoE.

A recipe with ``merge_method: mc_smoe`` or ``sub_moe`` names one Mixtral- or Qwen2/3-MoE-style model and
``parameters.num_experts``; :func:`merge_moe_to_disk` writes the smaller checkpoint. Routing statistics
come from ``evomerge.statistics.moe`` (collected once on calibration text, cached).
"""

from evomerge.moe.layout import ExpertStack, MoeLayer, MoeModel, find_moe_layers
from evomerge.moe.methods import EXPERT_MERGERS, ExpertMerger, ExpertMergeSettings, LayerInput, MergedLayer
from evomerge.moe.recipe import is_expert_merge, read_recipe
from evomerge.moe.to_disk import merge_moe_to_disk, preview_moe_merge

__all__ = [
    "EXPERT_MERGERS",
    "ExpertMergeSettings",
    "ExpertMerger",
    "ExpertStack",
    "LayerInput",
    "MergedLayer",
    "MoeLayer",
    "MoeModel",
    "find_moe_layers",
    "is_expert_merge",
    "merge_moe_to_disk",
    "preview_moe_merge",
    "read_recipe",
]
