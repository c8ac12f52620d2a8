"""Weighted averaging of whole weights."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.params import ParamSpec, ResolvedParams


def weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    out = torch.zeros_like(tensors[0])
    for tensor, w in zip(tensors, weights):
        out.add_(tensor, alpha=float(w))
    return out


@operator(
    "linear",
    params=(
        ParamSpec("weight", float, scope="input", doc="weight w_i of each model"),
        ParamSpec("normalize", bool, default=True, doc="divide by the sum of the weights"),
    ),
    base="ignored",
    reference="Wortsman et al., Model soups, ICML 2022 (arXiv 2203.05482)",
)
def linear(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Weighted average θ = Σ_i w_i θ_i / Σ_i w_i (``normalize: false`` drops the division).

    Model soups (Wortsman et al., 2022). A base model, when given, is one more input with its own weight.
    """
    weights = list(params.model("weight"))
    if weights and abs(sum(weights)) < 1e-12 and params["normalize"]:
        raise ValueError(f"linear: weights sum to zero at {inputs.name}; cannot normalise")
    out = weighted_sum(inputs.tensors, weights)
    if params["normalize"]:
        out.div_(sum(weights))
    return out
