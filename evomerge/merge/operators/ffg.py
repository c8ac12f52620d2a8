"""Fast Fisher Grafting: keep a fine-tune's most salient changes, reset the rest to the base."""

from __future__ import annotations

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
from evomerge.merge.operators.support import output_buffer, require_base
from evomerge.merge.params import ResolvedParams
from evomerge.statistics.lookup import STATISTICS_PARAM


@operator(
    "ffg",
    params=(STATISTICS_PARAM, density_spec(0.3), DENSITY_SCOPE, RANK1),
    base="required",
    min_models=1,
    max_models=1,
    global_pass=CurvaturePass,
    reference="Mahdavinia et al., Harnessing Optimization Dynamics for Curvature-Informed Model Merging, "
    "2025 (arXiv 2509.11167)",
)
def ffg(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + m ⊙ τ: the fine-tune where its saliency s = v ⊙ τ² is among the largest d·N, the base elsewhere.

    Mahdavinia et al. (2025): s is the second-order loss increase of resetting an entry to θ0, with Adam's
    second moments v as the diagonal curvature, so the mask keeps the changes the fine-tune relies on
    and drops the noise that interferes in a merge. ``density`` d is a fraction of the whole model
    (``density_scope: model``; the paper picks the smallest that keeps the expert's scores, 30-40%) or
    of each tensor; d = 1 gives the fine-tune, d = 0 the base. Tensors without second moments (never
    trained) keep the fine-tune's values.
    """
    base = require_base(inputs, "ffg")
    theta = inputs.tensors[0]
    moments = second_moments_for(inputs, params)
    out = output_buffer(inputs, theta)
    if moments is None:
        return out.copy_(theta)
    (mask,) = keep_masks(inputs, params, moments, "ffg")
    if mask is None:
        return out.copy_(theta)
    return torch.where(mask, theta, base, out=out)
