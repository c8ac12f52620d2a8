"""The expert-merge methods and their registry: one sparse layer of E experts in, ``num_experts`` out.

Unlike the per-tensor operators of ``evomerge.merge``, an expert merge sees a whole layer at once (every
expert, the router, the layer's routing statistics) and changes the model's structure, so it has its own
small contract: an :class:`ExpertMerger` names its settings model (the recipe's ``parameters``) and maps a
:class:`LayerInput` to a :class:`MergedLayer`. ``evomerge.moe.to_disk`` applies it to every sparse layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from evomerge.moe.align import align_to
from evomerge.moe.combine import (
    RouterMerge,
    compress_stack,
    group_weights,
    merge_router,
    subspace_merge,
    weighted_merge,
)
from evomerge.moe.grouping import dominant_groups, kmeans_groups
from evomerge.moe.layout import ExpertStack
from evomerge.registry import Registry
from evomerge.statistics.moe import LayerRouting


class ExpertMergeSettings(BaseModel):
    """Recipe ``parameters`` every expert merge takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_experts: int
    """Routed experts per sparse layer after merging (1 … the source's count)."""
    router: RouterMerge = "weighted"
    """A group's router row: ``weighted`` (frequency-weighted mean of the members' rows) or ``dominant``."""
    statistics: str | None = None
    """Folder of routing statistics (``evomerge.statistics.moe.collect_moe_statistics``)."""
    calibration_text: str | None = None
    """A UTF-8 text file to collect routing statistics from when no ``statistics`` folder is given."""
    calibration_sequences: int = Field(64, gt=0)
    calibration_length: int = Field(128, gt=1)
    """Tokens per calibration sequence cut from ``calibration_text``."""


class McSmoeSettings(ExpertMergeSettings):
    align: bool = True
    """Permute each member's neurons to match its group's dominant expert before averaging."""
    compress: bool = False
    """Replace every merged matrix by a low-rank part plus its sparse residual (MC-SMoE's "C")."""
    compress_rank_ratio: float = Field(0.25, gt=0, le=1)
    compress_density: float = Field(0.1, ge=0, le=1)
    """Fraction of the residual's entries kept (largest magnitude first)."""


class SubMoeSettings(ExpertMergeSettings):
    rank: int | None = Field(None, gt=0)
    """Shared-subspace rank kept per projection; None keeps all (the merge is then a weighted average)."""
    kmeans_restarts: int = Field(10, gt=0)


@dataclass
class LayerInput:
    experts: ExpertStack
    router: torch.Tensor
    routing: LayerRouting
    n_groups: int


@dataclass
class MergedLayer:
    experts: ExpertStack
    router: torch.Tensor
    groups: list[list[int]]
    """Source experts of each output expert, in output order."""
    weights: list[np.ndarray]
    """Each group's merge weights (renormalised routing frequencies), member order."""

    def provenance(self) -> list[dict[str, Any]]:
        return [{"experts": g, "weights": [round(float(x), 6) for x in w]} for g, w in zip(self.groups, self.weights)]


@dataclass(frozen=True)
class ExpertMerger:
    name: str
    settings: type[ExpertMergeSettings]
    merge_layer: Callable[[LayerInput, Any, np.random.Generator], MergedLayer]
    reference: str = ""

    @property
    def doc(self) -> str:
        return (self.merge_layer.__doc__ or "").strip()


EXPERT_MERGERS: Registry[ExpertMerger] = Registry("expert merge method", entry_point_group="evomerge.expert_mergers")


def mc_smoe(layer: LayerInput, settings: McSmoeSettings, rng: np.random.Generator) -> MergedLayer:
    """MC-SMoE: the most-routed experts lead the groups, the rest join the leader whose router logits they
    resemble most, are permutation-aligned to it and averaged by routing frequency; optionally compressed."""
    freq = layer.routing.frequency.numpy()
    groups, leaders = dominant_groups(freq, layer.routing.logit_similarity().numpy(), layer.n_groups)
    merged, weights = [], []
    for group, lead in zip(groups, leaders):
        ref = layer.experts.select([lead])
        members = []
        for e in group:
            expert = layer.experts.select([e])
            members.append(align_to(ref, expert) if settings.align and e != lead else expert)
        w = group_weights(freq, group)
        merged.append(weighted_merge(ExpertStack.stack(members), w))
        weights.append(w)
    experts = ExpertStack.stack(merged)
    if settings.compress:
        experts = compress_stack(experts, settings.compress_rank_ratio, settings.compress_density)
    router = merge_router(layer.router, groups, weights, settings.router, dominant=leaders)
    return MergedLayer(experts, router, groups, weights)


def sub_moe(layer: LayerInput, settings: SubMoeSettings, rng: np.random.Generator) -> MergedLayer:
    """Sub-MoE: k-means on the experts' output dissimilarity (rows of 1 − mean cosine), then per cluster a
    joint SVD with a shared output basis U and frequency-merged V, optionally truncated to ``rank``."""
    freq = layer.routing.frequency.numpy()
    distance = 1.0 - layer.routing.output_cosine.double().numpy()
    groups = kmeans_groups(distance, layer.n_groups, rng, restarts=settings.kmeans_restarts)
    weights = [group_weights(freq, g) for g in groups]
    merged = [subspace_merge(layer.experts.select(g), w, settings.rank) for g, w in zip(groups, weights)]
    router = merge_router(layer.router, groups, weights, settings.router)
    return MergedLayer(ExpertStack.stack(merged), router, groups, weights)


EXPERT_MERGERS.register("mc_smoe", ExpertMerger(
    "mc_smoe", McSmoeSettings, mc_smoe,
    "Li et al., Merge, Then Compress: Demystify Efficient SMoE with Hints from Its Routing Policy, ICLR 2024"))
EXPERT_MERGERS.register("sub_moe", ExpertMerger(
    "sub_moe", SubMoeSettings, sub_moe,
    "Li et al., Sub-MoE: Efficient Mixture-of-Expert LLMs Compression via Subspace Expert Merging, 2025"))
