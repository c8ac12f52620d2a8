"""Task arithmetic: add weighted task vectors to the base model."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import INT8_MASK, LAMBDA, normalize_spec, weight_spec
from evomerge.merge.operators.task_vectors import merge_task_vectors
from evomerge.merge.params import ResolvedParams


@operator(
    "task_arithmetic",
    params=(weight_spec(), LAMBDA, normalize_spec(False), INT8_MASK),
    base="required",
    reference="Ilharco et al., Editing models with task arithmetic, ICLR 2023 (arXiv 2212.04089)",
)
def task_arithmetic(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + λ Σ_i w_i τ_i with τ_i = θ_i − θ0; ``normalize: true`` divides the sum by Σ_i w_i.

    Ilharco et al. (2023). The paper picks λ on validation data; the default λ = 1 with unit weights is
    the plain sum of the task vectors (mergekit's defaults too).
    """
    return merge_task_vectors(inputs, params, method="task_arithmetic")
