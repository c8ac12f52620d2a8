"""Fisher-weighted averaging: each parameter entry averaged with weights from the models' Fisher information."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.linear import weighted_sum
from evomerge.merge.operators.support import output_buffer, per_input
from evomerge.merge.params import ParamSpec, ResolvedParams
from evomerge.statistics.lookup import STATISTICS_PARAM, StatisticsPass, folders_for, statistics_for


def fisher_average(
    tensors: Sequence[torch.Tensor], fishers: list[torch.Tensor], weights: list[float], floor: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """θ = Σ_i λ_i F̂_i ⊙ θ_i / Σ_i λ_i F̂_i elementwise, with F̂_i = max(F_i, floor)."""
    numerator = torch.zeros_like(tensors[0]) if out is None else out.zero_()
    denominator = torch.zeros_like(tensors[0])
    scratch = torch.empty_like(tensors[0])
    for theta, fisher, weight in zip(tensors, fishers, weights):
        torch.clamp_min(fisher, floor, out=scratch).mul_(weight)
        denominator.add_(scratch)
        numerator.addcmul_(scratch, theta)
    return numerator.div_(denominator)


@operator(
    "fisher",
    params=(
        ParamSpec("weight", float, scope="model", default=1.0, low=0.0, doc="λ_i, a prior weight per model"),
        ParamSpec("fisher_floor", float, default=1e-6, low=0.0, low_open=True,
                  doc="ε: Fisher values below it count as ε (entries no model is sure of get the weighted mean)"),
        ParamSpec("normalize_fisher", bool, default=False,
                  doc="divide each model's Fisher by its norm over the whole model (FusionBench's option)"),
        STATISTICS_PARAM,
    ),
    base="ignored",
    global_pass=lambda: StatisticsPass("fisher"),
    reference="Matena & Raffel, Merging Models with Fisher-Weighted Averaging, NeurIPS 2022 (arXiv 2111.09832)",
)
def fisher(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = Σ_i λ_i F̂_i ⊙ θ_i / Σ_i λ_i F̂_i with F̂_i = max(F_i, ε), F_i each model's diagonal Fisher.

    Matena & Raffel (2022): the maximiser of Σ_i λ_i log p(θ | θ_i, F_i) under a diagonal Laplace
    approximation of each model's posterior. The Fishers come from each model's ``statistics`` folder
    (``evomerge.statistics``); tensors no model has a Fisher for get the λ-weighted average. FusionBench
    adds ε instead of flooring at it (``minimal_fisher_weight`` 1e-6): the two differ by less than ε.
    ``normalize_fisher`` replaces F_i by F_i / ‖F_i‖ (norm over the whole model), so that a model whose
    Fisher is larger overall (a less confident one, often) does not outweigh the others everywhere.
    """
    weights = per_input(inputs, params, "weight")
    if sum(weights) <= 0:
        raise ConfigError(f"parameter 'weight' of fisher sums to zero at {inputs.name}; give some model a positive weight")
    out = output_buffer(inputs, inputs.tensors[0])
    fishers = statistics_for(inputs, params, "fisher")
    if fishers is not None and params["normalize_fisher"]:
        norms = [f.fisher_norm() for f in folders_for(inputs, params)]
        fishers = [f / n for f, n in zip(fishers, norms)]
    if fishers is None:
        return weighted_sum(inputs.tensors, weights, sum(weights), out)
    return fisher_average(inputs.tensors, fishers, weights, float(params["fisher_floor"]), out)
