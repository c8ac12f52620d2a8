"""RegMean: merge each linear layer by solving the least-squares problem over all models' inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.linear import weighted_sum
from evomerge.merge.operators.support import output_buffer, per_input
from evomerge.merge.params import ParamSpec, ResolvedParams
from evomerge.statistics.lookup import STATISTICS_PARAM, StatisticsPass, folders_for, statistics_for


def regmean_solve(
    weights: Sequence[torch.Tensor], grams: list[torch.Tensor], alpha: float, ridge: float = 0.0,
    scales: list[float] | None = None,
) -> torch.Tensor:
    """W* = (Σ_i W_i G̃_i)(Σ_i G̃_i)⁻¹ for torch-layout weights W_i [out, in] and input Grams G_i [in, in].

    G̃_i = s_i (α G_i + (1 − α) diag(G_i)). ``ridge`` > 0 adds r·I to Σ G̃_i and r·W̄ to Σ W_i G̃_i
    (r = ridge × the mean diagonal of Σ G̃_i, W̄ the mean of the W_i): it pulls directions no model's
    inputs ever span (an input feature that is always 0) to the plain average instead of leaving the
    system singular. Solved in float64.
    """
    scales = scales or [1.0] * len(weights)
    n_in = grams[0].shape[0]
    total = torch.zeros(n_in, n_in, dtype=torch.float64, device=grams[0].device)
    rhs = torch.zeros(weights[0].shape, dtype=torch.float64, device=weights[0].device)
    for w, g, s in zip(weights, grams, scales):
        g64 = g.double()
        reduced = alpha * g64 + (1.0 - alpha) * torch.diag(torch.diagonal(g64))
        reduced.mul_(s)
        total.add_(reduced)
        rhs.add_(w.double() @ reduced)
    if ridge > 0:
        r = ridge * float(torch.diagonal(total).mean().clamp_min(1e-30))
        total.diagonal().add_(r)
        rhs.add_(torch.stack([w.double() for w in weights]).mean(0), alpha=r)
    # W* total = rhs with total symmetric  <=>  total W*ᵀ = rhsᵀ
    return torch.linalg.solve(total, rhs.T).T


@operator(
    "regmean",
    params=(
        ParamSpec("alpha", float, default=0.95, low=0.0, high=1.0,
                  doc="α, scale of the Grams' off-diagonal entries (1: exact least squares)"),
        ParamSpec("gram_scale", str, default="sum", choices=("sum", "mean"),
                  doc="sum: G_i = X_iᵀX_i (the paper's objective); mean: divided by each model's row count"),
        ParamSpec("ridge", float, default=1e-6, low=0.0,
                  doc="relative ridge towards the plain average, for inputs no model's data spans"),
        ParamSpec("weight", float, scope="model", default=1.0, low=0.0,
                  doc="scale of each model's Gram (and its weight in the plain average of the other tensors)"),
        STATISTICS_PARAM,
    ),
    base="ignored",
    global_pass=lambda: StatisticsPass("gram"),
    reference="Jin et al., Dataless Knowledge Fusion by Merging Weights of Language Models, ICLR 2023 "
    "(arXiv 2212.09849)",
)
def regmean(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Per linear layer W* = argmin_W Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖² = (Σ_i W_i G̃_i)(Σ_i G̃_i)⁻¹ (torch [out, in]
    layout), with G_i = X_iᵀX_i the Gram of the inputs model i's layer saw on its own data and
    G̃_i = α G_i + (1 − α) diag(G_i).

    Jin et al. (2023). α < 1 shrinks the off-diagonal entries, which regularises towards the plain average
    (α = 0 gives a per-input-feature weighted average). The paper tunes α; the default 0.95 is
    FusionBench's CLIP setting (its GPT-2 one is 0.6). Tensors with no Gram (biases, norms, embeddings)
    get the plain (weight-weighted) average, as in the paper.
    """
    weights = per_input(inputs, params, "weight")
    if sum(weights) <= 0:
        raise ConfigError(f"parameter 'weight' of regmean sums to zero at {inputs.name}; give some model a positive weight")
    grams = statistics_for(inputs, params, "gram")
    if grams is None:
        return weighted_sum(inputs.tensors, weights, sum(weights), output_buffer(inputs, inputs.tensors[0]))
    scales = list(weights)
    if params["gram_scale"] == "mean":
        counts = [f.gram_count(inputs.name) for f in folders_for(inputs, params)]
        scales = [w / n for w, n in zip(weights, counts)]
    merged = regmean_solve(inputs.tensors, grams, float(params["alpha"]), float(params["ridge"]), scales)
    return output_buffer(inputs, inputs.tensors[0]).copy_(merged)
