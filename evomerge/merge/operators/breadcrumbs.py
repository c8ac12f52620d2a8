"""Model Breadcrumbs: drop the largest outliers and the smallest entries of each task vector."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.sparsify import Rescale, keep_window
from evomerge.merge.operators.support import (
    INT8_MASK,
    LAMBDA,
    RESCALE_TRIM,
    density_spec,
    normalize_spec,
    per_input,
    weight_spec,
)
from evomerge.merge.operators.task_vectors import merge_task_vectors
from evomerge.merge.params import ParamSpec, ResolvedParams

REFERENCE = "Davari & Belilovsky, Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks, ECCV 2024 (arXiv 2312.06795)"
GAMMA = ParamSpec(
    "gamma",
    float,
    scope="model",
    default=0.01,
    low=0.0,
    high=1.0,
    doc="fraction γ of the largest-magnitude entries dropped as outliers",
)
PARAMS = (
    weight_spec(),
    density_spec(
        0.9, doc="fraction d of entries kept after the outliers and the smallest entries are dropped"
    ),
    GAMMA,
    LAMBDA,
    normalize_spec(False),
    RESCALE_TRIM,
    INT8_MASK,
)


def _breadcrumbs(
    inputs: MergeInputs, params: ResolvedParams, method: str, sign_consensus: bool
) -> torch.Tensor:
    densities = per_input(inputs, params, "density")
    gammas = per_input(inputs, params, "gamma")
    rescale: Rescale = "l1" if params["rescale"] else None

    def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
        return keep_window(delta, densities[i], gammas[i], rescale)

    return merge_task_vectors(inputs, params, method=method, sparsify=sparsify, sign_consensus=sign_consensus)


@operator("breadcrumbs", params=PARAMS, base="required", reference=REFERENCE)
def breadcrumbs(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + λ Σ_i w_i m_i ⊙ τ_i (Davari & Belilovsky, 2024), per tensor:
    m_i = 1[q_{1−d−γ} ≤ |τ_i| < q_{1−γ}] drops the γ-fraction of largest magnitudes (outliers) and then the
    smallest entries until a d-fraction is left (when d + γ > 1 fewer outliers go, so d is met).

    The paper tunes both fractions per setting; the evomerge defaults (d = 0.9, γ = 0.01) are a mild
    choice, and mergekit recipes default to d = 1 (no masking).
    """
    return _breadcrumbs(inputs, params, "breadcrumbs", sign_consensus=False)


@operator("breadcrumbs_ties", params=PARAMS, base="required", reference=REFERENCE)
def breadcrumbs_ties(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Breadcrumbs masks, then TIES's election: θ = θ0 + λ Σ_{i∈A} w_i m_i ⊙ τ_i (/ Σ_{i∈A} w_i with
    ``normalize``), where m_i are the masks of ``breadcrumbs`` and A the models whose sign of w_i m_i ⊙ τ_i
    agrees with sign(Σ_i w_i m_i ⊙ τ_i) at each entry.
    """
    return _breadcrumbs(inputs, params, "breadcrumbs_ties", sign_consensus=True)
