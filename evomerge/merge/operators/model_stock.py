"""Model Stock: interpolate between the base and the average of the fine-tunes by their angle."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import require_base
from evomerge.merge.params import ParamSpec, ResolvedParams

NORM_PRODUCT_FLOOR = 1e-6
SINGULAR = 1e-6
"""Where |1 + (K−1) cos φ| is below this there is no finite ratio; the base is kept (mergekit's rule)."""


@operator(
    "model_stock",
    params=(
        ParamSpec(
            "filter_wise", bool, default=False, doc="one ratio per row (last axis) instead of per tensor"
        ),
        ParamSpec(
            "angle_average",
            str,
            default="angle",
            mergekit_default="cosine",
            choices=("angle", "cosine"),
            doc="with K > 2, cos φ is the cosine of the mean pairwise angle (paper, FusionBench) or the mean "
            "pairwise cosine (mergekit)",
        ),
    ),
    base="required",
    min_models=2,
    reference="Jang et al., Model Stock: All we need is just a few fine-tuned models, ECCV 2024 (arXiv 2403.19522)",
)
def model_stock(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = t · (1/K) Σ_i θ_i + (1 − t) · θ0 with t = K cos φ / (1 + (K − 1) cos φ) (Jang et al., 2024).

    φ is the angle between the task vectors τ_i = θ_i − θ0 (pairwise cosines, norms floored at 1e-6 and
    clamped to [−1, 1]); with K > 2 models the pairs are combined per ``angle_average``. Computed per
    tensor, or per row with ``filter_wise``. Where 1 + (K − 1) cos φ ≈ 0, t = 0 (the base).
    """
    base = require_base(inputs, "model_stock")
    shape = base.shape
    filter_wise = bool(params["filter_wise"])
    view = (lambda x: x.unsqueeze(0) if x.dim() == 1 else x) if filter_wise else (lambda x: x.reshape(-1))
    w0 = view(base)
    offsets = [view(t) - w0 for t in inputs.tensors]
    norms = [torch.linalg.vector_norm(o, dim=-1) for o in offsets]
    cosines = [
        (
            torch.linalg.vecdot(offsets[i], offsets[j], dim=-1)
            / (norms[i] * norms[j]).clamp(min=NORM_PRODUCT_FLOOR)
        ).clamp(-1, 1)
        for i in range(len(offsets))
        for j in range(i + 1, len(offsets))
    ]
    stacked = torch.stack(cosines)
    if params["angle_average"] == "angle":
        cos_phi = torch.cos(torch.arccos(stacked).mean(dim=0))
    else:
        cos_phi = stacked.mean(dim=0)
    cos_phi = cos_phi.unsqueeze(-1)
    k = len(offsets)
    denominator = 1 + (k - 1) * cos_phi
    singular = denominator.abs() < SINGULAR
    ratio = torch.where(
        singular, torch.zeros_like(cos_phi), k * cos_phi / torch.where(singular, 1.0, denominator)
    )
    average = torch.zeros_like(w0)
    for tensor in inputs.tensors:
        average.add_(view(tensor))
    average.div_(k)
    return torch.lerp(w0, average, ratio).reshape(shape)
