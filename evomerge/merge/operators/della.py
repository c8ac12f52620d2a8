"""DELLA: magnitude-ranked random drop (MagPrune), rescale, then elect and fuse."""

from __future__ import annotations

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.dare import rescale_of
from evomerge.merge.operators.sparsify import magnitude_sampled_drop
from evomerge.merge.operators.support import (
    INT8_MASK,
    LAMBDA,
    RESCALE_DROP,
    RESCALE_MODE,
    density_spec,
    normalize_spec,
    per_input,
    require_generator,
    weight_spec,
)
from evomerge.merge.operators.task_vectors import merge_task_vectors
from evomerge.merge.params import ParamSpec, ResolvedParams

REFERENCE = "Deep et al., DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling (arXiv 2406.11617)"
DENSITY = density_spec(0.7, doc="mean keep probability d of each entry (the authors' example drops 30%)")
EPSILON = ParamSpec(
    "epsilon",
    float,
    scope="model",
    default=0.14,
    mergekit_default=0.15,
    low=0.0,
    doc="half-width ε of the keep probabilities [d − ε, d + ε] (the authors' example uses 0.14)",
)


def _della(inputs: MergeInputs, params: ResolvedParams, method: str, sign_consensus: bool) -> torch.Tensor:
    generator = require_generator(inputs, method)
    densities = per_input(inputs, params, "density")
    epsilons = per_input(inputs, params, "epsilon")
    for i, (density, epsilon) in enumerate(zip(densities, epsilons)):
        if density < 1 and not (density - epsilon > 0 and density + epsilon < 1):
            raise ConfigError(
                f"parameter 'epsilon' must keep density ± epsilon inside (0, 1); got density={density:g}, "
                f"epsilon={epsilon:g} for model #{i + 1} at {inputs.name}"
            )
    rescale = rescale_of(params)

    def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
        return magnitude_sampled_drop(delta, densities[i], epsilons[i], generator, rescale)

    return merge_task_vectors(inputs, params, method=method, sparsify=sparsify, sign_consensus=sign_consensus)


PARAMS = (weight_spec(), DENSITY, EPSILON, LAMBDA, RESCALE_DROP, RESCALE_MODE, INT8_MASK)


@operator(
    "della",
    params=(*PARAMS, normalize_spec(True)),
    base="required",
    randomized=True,
    reference=REFERENCE,
)
def della(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """DELLA (Deep et al., 2024): drop, elect, fuse.

    Drop (MagPrune): in each row of τ_i = θ_i − θ0 the entry of normalised magnitude rank r ∈ [0, 1] is
    kept with probability q = d − ε + 2ε·r, then rescaled by 1/q (``rescale_mode: keep_probability``, the
    paper's 1/(1−p)) or so that ‖τ_i‖₁ is preserved (``l1``, mergekit). Elect: γ = sign(Σ_i w_i τ̃_i).
    Fuse: θ = θ0 + λ · mean (``normalize``) or sum of the agreeing w_i τ̃_i.
    """
    return _della(inputs, params, "della", sign_consensus=True)


@operator(
    "della_linear",
    params=(*PARAMS, normalize_spec(False)),
    base="required",
    randomized=True,
    reference=REFERENCE,
)
def della_linear(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """DELLA's MagPrune drop (see ``della``) followed by task arithmetic: θ = θ0 + λ Σ_i w_i τ̃_i."""
    return _della(inputs, params, "della_linear", sign_consensus=False)
