"""Spherical linear interpolation between the base model and one other model."""

from __future__ import annotations

import math

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import require_base
from evomerge.merge.params import REQUIRED, ParamSpec, ResolvedParams

DOT_THRESHOLD = 0.9995
"""Above this |cos Ω| the two tensors count as colinear and are interpolated linearly."""
NORM_EPS = 1e-8


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """sin((1−t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1 with cos Ω = ⟨v0, v1⟩/(‖v0‖‖v1‖) over the whole tensor.

    Falls back to (1−t)·v0 + t·v1 when |cos Ω| > 0.9995 (colinear or antipodal). A norm below 1e-8 counts
    as 1, so a zero tensor is interpolated linearly instead of producing NaN.
    """
    a, b = v0.reshape(-1), v1.reshape(-1)
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    norm_a = norm_a if norm_a > NORM_EPS else 1.0
    norm_b = norm_b if norm_b > NORM_EPS else 1.0
    dot = min(1.0, max(-1.0, float(torch.dot(a, b)) / (norm_a * norm_b))) if a.numel() else 1.0
    if abs(dot) > DOT_THRESHOLD:
        coef_a, coef_b = 1.0 - t, t
    else:
        omega = math.acos(dot)
        sin_omega = math.sin(omega)
        coef_a, coef_b = math.sin((1.0 - t) * omega) / sin_omega, math.sin(t * omega) / sin_omega
    return torch.mul(v0, coef_a).add_(v1, alpha=coef_b)


@operator(
    "slerp",
    params=(
        ParamSpec("t", float, default=0.5, mergekit_default=REQUIRED,
                  doc="interpolation position: 0 gives the base, 1 the other model (mandatory in mergekit recipes)"),
    ),
    base="required",
    min_models=1,
    max_models=1,
    reference="Shoemake, Animating rotation with quaternion curves, SIGGRAPH 1985",
)
def slerp(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Spherical interpolation on raw weights (Shoemake, 1985), per tensor, from the base (t = 0) to the
    other model (t = 1): θ = sin((1−t)Ω)/sin Ω · θ0 + sin(tΩ)/sin Ω · θ1, cos Ω = ⟨θ0, θ1⟩/(‖θ0‖‖θ1‖),
    with a linear fallback for colinear tensors (|cos Ω| > 0.9995), as mergekit does.
    """
    return slerp_tensors(float(params["t"]), require_base(inputs, "slerp"), inputs.tensors[0])
