"""OTA: Optimization-Trajectory-Aware merging, task vectors averaged with Adam-curvature weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.curvature import (
    DENSITY_SCOPE,
    RANK1,
    CurvaturePass,
    density_spec,
    keep_masks,
    second_moments_for,
)
from evomerge.merge.operators.linear import weighted_sum
from evomerge.merge.operators.support import output_buffer, per_input
from evomerge.merge.params import ParamSpec, ResolvedParams
from evomerge.statistics.lookup import STATISTICS_PARAM


def curvature_weight(
    moment: torch.Tensor, power: float, epsilon: float, scale: float = 1.0, normalise: str = "none"
) -> torch.Tensor:
    """w = c·v^p (divided by its mean over the tensor with ``normalise: global``) + ε."""
    weight = moment.pow(power).mul_(scale)
    if normalise == "global":
        weight.div_(weight.mean() + epsilon)
    return weight.add_(epsilon)


def ota_merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    weights: list[torch.Tensor] | None,
    masks: list[torch.Tensor | None] | None = None,
    *,
    aggregate: str = "precond",
    fallback: str = "base",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """θ0 + Σ_t w_t m_t τ_t / Σ_t w_t m_t (``precond``) or θ0 + Σ_t m_t τ_t / K (``linear``); with no base,
    Σ_t w_t θ_t / Σ_t w_t. ``weights`` None: every w_t = 1 (the plain average). Entries that every mask
    drops take the ``fallback``: the base, or the plain average of the models.

    Besides the inputs it holds a numerator, a denominator and one scratch tensor.
    """
    like = tensors[0]
    if base is None and masks is not None and any(m is not None for m in masks):
        raise ValueError("ota_merge: masks need a base (they select task-vector entries)")
    masks = masks if masks is not None else [None] * len(tensors)
    numerator = torch.zeros_like(like) if out is None else out.zero_()
    denominator = torch.zeros_like(like)
    kept = (
        None
        if all(m is None for m in masks)
        else torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    )
    scratch = torch.empty_like(like)
    for i, (theta, mask) in enumerate(zip(tensors, masks)):
        delta = theta if base is None else torch.sub(theta, base, out=scratch)
        if aggregate == "linear":
            numerator.add_(delta if mask is None else delta.mul_(mask))
        elif weights is None:
            numerator.add_(delta)
            denominator.add_(1.0)
        else:
            weight = weights[i] if mask is None else weights[i] * mask
            numerator.addcmul_(weight, delta)
            denominator.add_(weight)
        if kept is not None and mask is not None:
            kept.logical_or_(mask)
        elif kept is not None:
            kept.fill_(True)
    if aggregate == "linear":
        denominator.fill_(len(tensors))
    merged = numerator.div_(denominator.clamp_min_(torch.finfo(like.dtype).tiny))
    if base is not None:
        merged.add_(base)
    if kept is not None:
        fallback_value = base if fallback == "base" and base is not None else weighted_sum(tensors, [1.0] * len(tensors), len(tensors))
        merged = torch.where(kept, merged, fallback_value, out=merged)
    return merged


@operator(
    "ota",
    params=(
        STATISTICS_PARAM,
        ParamSpec(
            "power",
            float,
            default=0.5,
            low=0.0,
            low_open=True,
            doc="p in w = v^p (0.5: Adam's own preconditioner √v; the paper also tries 0.25 and 1)",
        ),
        ParamSpec(
            "epsilon",
            float,
            default=1e-26,
            low=0.0,
            doc="ε added to every weight (the paper's configs use 1e-26: Adam's v of an LLM is ~1e-19)",
        ),
        ParamSpec(
            "normalise",
            str,
            default="none",
            choices=("none", "global"),
            doc="global: divide each model's weights by their mean over the tensor",
        ),
        ParamSpec(
            "scaling_factor",
            float,
            scope="model",
            default=1.0,
            low=0.0,
            doc="c_t, a factor on model t's weights",
        ),
        ParamSpec(
            "aggregate",
            str,
            default="precond",
            choices=("precond", "linear"),
            doc="precond: curvature-weighted average of the masked task vectors; linear: their plain mean",
        ),
        ParamSpec(
            "fallback",
            str,
            default="base",
            choices=("base", "mean"),
            doc="value of entries that every model's mask drops: the base, or the models' plain average",
        ),
        density_spec(1.0),
        DENSITY_SCOPE,
        RANK1,
    ),
    base="optional",
    global_pass=CurvaturePass,
    reference="Mahdavinia et al., Harnessing Optimization Dynamics for Curvature-Informed Model Merging, "
    "2025 (arXiv 2509.11167)",
)
def ota(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + Σ_t w_t ⊙ m_t ⊙ τ_t / Σ_t w_t ⊙ m_t with w_t = c_t v_t^p + ε, v_t model t's Adam second moments.

    Mahdavinia et al. (2025): Adam's v is a diagonal curvature estimate, so each entry is averaged with
    the weights of the models that are most certain about it (Fisher merging with the optimizer's own
    statistic; equal v gives the plain average). m_t is Fast Fisher Grafting's mask (``density`` < 1:
    keep the entries of largest saliency v ⊙ τ², see ``ffg``); where every model is masked the entry takes
    the ``fallback`` (the paper's configs: the base). ``rank1_approx`` replaces v by its rank-1 row × column
    approximation (the paper's Lemma 1). Without a base: Σ_t w_t θ_t / Σ_t w_t, and no masks. Tensors no
    model has second moments for get the plain average. The authors' ``linear`` mode averages unmasked task
    vectors unless ``rescale`` is on; here it averages the masked ones, as their README describes.
    """
    moments = second_moments_for(inputs, params)
    out = output_buffer(inputs, inputs.tensors[0])
    if moments is None:
        return ota_merge(inputs.tensors, inputs.base, None, out=out)
    scales = per_input(inputs, params, "scaling_factor")
    power, epsilon, normalise = float(params["power"]), float(params["epsilon"]), str(params["normalise"])
    masks = keep_masks(inputs, params, moments, "ota")
    weights = [curvature_weight(v, power, epsilon, s, normalise) for v, s in zip(moments, scales)]
    return ota_merge(
        inputs.tensors,
        inputs.base,
        weights,
        masks,
        aggregate=str(params["aggregate"]),
        fallback=str(params["fallback"]),
        out=out,
    )
