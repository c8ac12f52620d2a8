"""Weighted averaging of whole weights."""

from __future__ import annotations

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import per_input, weight_spec
from evomerge.merge.params import ParamSpec, ResolvedParams

WEIGHT_SUM_EPS = 1e-12


def weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ_i w_i x_i, accumulated in one output buffer."""
    out = torch.zeros_like(tensors[0])
    for tensor, w in zip(tensors, weights):
        out.add_(tensor, alpha=float(w))
    return out


@operator(
    "linear",
    params=(
        weight_spec("input", default=1.0),
        ParamSpec("normalize", bool, default=True, doc="divide by the sum of the weights"),
    ),
    base="ignored",
    reference="Wortsman et al., Model soups, ICML 2022 (arXiv 2203.05482)",
)
def linear(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Weighted average θ = Σ_i w_i θ_i / Σ_i w_i (``normalize: false`` drops the division).

    Model soups (Wortsman et al., 2022). A base model, when given, is one more input with its own weight.
    """
    weights = per_input(inputs, params, "weight")
    out = weighted_sum(inputs.tensors, weights)
    if params["normalize"]:
        total = sum(weights)
        if abs(total) < WEIGHT_SUM_EPS:
            raise ConfigError(
                f"parameter 'weight' sums to zero at {inputs.name}; cannot normalise (set normalize: false)"
            )
        out.div_(total)
    return out
