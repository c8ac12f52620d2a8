"""The shared core of the task-vector operators (task arithmetic, TIES, DARE, DELLA, Breadcrumbs).

Each of them is: τ_i = θ_i − θ0, optionally sparsified, weighted by w_i, optionally restricted to the
entries whose sign agrees with an elected sign, summed, optionally normalised by the weights that
contributed, scaled by λ and added back to θ0. This follows mergekit's generalized task arithmetic step by
step (so mergekit recipes give mergekit's numbers) but streams: one scratch task vector at a time plus a
few accumulators, never the K task vectors stacked, so memory does not grow with the number of models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from evomerge.merge.operator import MergeInputs
from evomerge.merge.operators.support import per_input, require_base
from evomerge.merge.params import ResolvedParams

Sparsifier = Callable[[torch.Tensor, int], torch.Tensor]
"""(task vector of input i in a scratch buffer it may overwrite, i) → the sparsified task vector."""

ZeroSign = Literal["positive", "majority"]
WEIGHT_SUM_EPS = 1e-8
"""Below this |Σ w_i| the unweighted sum is kept (mergekit's guard against dividing by zero)."""


def merge_task_vectors(
    inputs: MergeInputs,
    params: ResolvedParams,
    *,
    method: str,
    sparsify: Sparsifier | None = None,
    sign_consensus: bool = False,
    zero_sign: ZeroSign = "positive",
) -> torch.Tensor:
    """θ0 + λ · Σ_i w_i m_i τ̃_i / D, with τ̃_i the sparsified task vectors.

    Without sign consensus m_i = 1 and D = Σ_i w_i. With it, the elected sign γ = sign(Σ_i w_i τ̃_i),
    m_i = 1[sign(w_i τ̃_i) = γ] and D = Σ_i w_i m_i (entry-wise; 1 where no model agrees). D applies only
    with ``normalize``. Where Σ_i w_i τ̃_i = 0 exactly, ``zero_sign`` picks γ: ``positive`` (mergekit) or
    the sign held by most entries of the tensor (the TIES authors' code, which takes it over the model).
    """
    base = require_base(inputs, method)
    weights = per_input(inputs, params, "weight")
    if not inputs.tensors:
        return base.clone()
    divisor: torch.Tensor | float
    if sign_consensus:
        merged, divisor = _sum_agreeing(inputs.tensors, base, weights, sparsify, zero_sign)
    else:
        merged = _weighted_sum(inputs.tensors, base, weights, sparsify)
        total = sum(weights)
        divisor = total if abs(total) >= WEIGHT_SUM_EPS else 1.0
    if params["normalize"]:
        merged.div_(divisor)
    scale = params["lambda"]
    if scale != 1:
        merged.mul_(scale)
    return merged.add_(base)


def _weighted_sum(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, weights: list[float], sparsify: Sparsifier | None
) -> torch.Tensor:
    merged = torch.zeros_like(base)
    if sparsify is None:
        # Σ w_i (θ_i − θ0) = Σ w_i θ_i − (Σ w_i) θ0: one pass per model instead of two. The cancellation
        # costs about K·ε·|θ0|, the order of the rounding of the merged weight itself in float32.
        for tensor, weight in zip(tensors, weights):
            merged.add_(tensor, alpha=weight)
        return merged.sub_(base, alpha=sum(weights))
    scratch = torch.empty_like(base)
    for i, (tensor, weight) in enumerate(zip(tensors, weights)):
        delta = torch.sub(tensor, base, out=scratch)
        if sparsify is not None:
            delta = sparsify(delta, i)
        merged.add_(delta, alpha=weight)
    return merged


def _sum_agreeing(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    weights: list[float],
    sparsify: Sparsifier | None,
    zero_sign: ZeroSign,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign election and disjoint sum in one streaming pass, with four accumulators whatever K.

    With d_i = w_i τ̃_i it accumulates E = Σ d_i (the election, summed in mergekit's order),
    P = Σ max(d_i, 0), S = Σ w_i sign(d_i) and A = Σ w_i |sign(d_i)|. The agreeing models then sum to P
    where γ = + and to E − P where γ = −, and their weights to (A + γS)/2.
    """
    elect, positive_sum = torch.zeros_like(base), torch.zeros_like(base)
    signed_weight, active_weight = torch.zeros_like(base), torch.zeros_like(base)
    scratch, part = torch.empty_like(base), torch.empty_like(base)
    for i, (tensor, weight) in enumerate(zip(tensors, weights)):
        delta = torch.sub(tensor, base, out=scratch)
        if sparsify is not None:
            delta = sparsify(delta, i)
        if weight != 1:
            delta.mul_(weight)
        elect.add_(delta)
        positive_sum.add_(torch.clamp(delta, min=0, out=part))
        signed_weight.add_(torch.sign(delta, out=part), alpha=weight)
        active_weight.add_(part.abs_(), alpha=weight)
    ties_positive = zero_sign == "positive" or bool(torch.sign(elect).sum() >= 0)
    positive = elect >= 0 if ties_positive else elect > 0
    negative_sum = elect.sub_(positive_sum)
    merged = torch.where(positive, positive_sum, negative_sum, out=part)
    gamma = positive_sum.copy_(positive).mul_(2).sub_(1)
    divisor = active_weight.addcmul_(signed_weight, gamma).mul_(0.5)
    divisor.masked_fill_(divisor == 0, 1.0)
    return merged, divisor
