"""Passthrough: one input copied through, for slicing frankenmerges."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import per_input
from evomerge.merge.params import ParamSpec, ResolvedParams


@operator(
    "passthrough",
    params=(
        ParamSpec("scale", float, scope="input", default=None, doc="optional factor applied to the tensor"),
    ),
    base="ignored",
    min_models=1,
    max_models=1,
    reference="mergekit passthrough (Goddard et al., Arcee's MergeKit, EMNLP 2024, arXiv 2403.13257)",
)
def passthrough(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = s · θ_1 for the single input (θ_1 itself, not a copy, when no ``scale`` is set).

    Layer selection and renaming (slices, ``num_hidden_layers``) are done by the engine.
    """
    (scale,) = per_input(inputs, params, "scale")
    tensor = inputs.tensors[0]
    return tensor if scale is None else torch.mul(tensor, float(scale))
