"""Consensus merging with TALL masks: keep only the entries that enough tasks rely on."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import LAMBDA, per_input, require_base, weight_spec
from evomerge.merge.params import ParamSpec, ResolvedParams


@operator(
    "consensus",
    params=(
        weight_spec(),
        ParamSpec(
            "mask_lambda",
            float,
            scope="model",
            default=0.6,
            low=0.0,
            doc="λ_t of each task's TALL mask (the authors pick it in {0.2, ..., 0.6} on validation data)",
        ),
        ParamSpec("k", int, default=2, low=0, doc="minimum number of tasks whose mask keeps an entry"),
        LAMBDA,
    ),
    base="required",
    reference="Wang, Dimitriadis et al., Localizing Task Information for Improved Model Merging and "
    "Compression, ICML 2024 (arXiv 2405.07813)",
)
def consensus(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + λ · m_c ⊙ τ_MTL (Wang, Dimitriadis et al., 2024), with τ_MTL = Σ_i w_i τ_i,
    TALL masks m_i = 1[|w_i τ_i| > λ_i · |τ_MTL − w_i τ_i|] and the consensus mask m_c = 1[Σ_i m_i ≥ k].

    k = 2 drops the "catastrophic" (no task) and "selfish" (one task) weights, k = 1 only the catastrophic
    ones, k = 0 is task arithmetic. Two streaming passes over the inputs (τ_MTL, then the votes).
    """
    base = require_base(inputs, "consensus")
    weights = per_input(inputs, params, "weight")
    mask_lambdas = per_input(inputs, params, "mask_lambda")
    k = int(params["k"])
    multi_task = torch.zeros_like(base)
    scratch = torch.empty_like(base)
    for tensor, weight in zip(inputs.tensors, weights):
        multi_task.add_(torch.sub(tensor, base, out=scratch), alpha=weight)
    if k > 0:
        votes = torch.zeros(base.shape, dtype=torch.int32, device=base.device)
        residual = torch.empty_like(base)
        for tensor, weight, mask_lambda in zip(inputs.tensors, weights, mask_lambdas):
            task = torch.sub(tensor, base, out=scratch).mul_(weight)
            torch.sub(multi_task, task, out=residual).abs_().mul_(mask_lambda)
            votes.add_(task.abs_() > residual)
        multi_task.mul_(votes >= k)
    scale = params["lambda"]
    if scale != 1:
        multi_task.mul_(scale)
    return multi_task.add_(base)
