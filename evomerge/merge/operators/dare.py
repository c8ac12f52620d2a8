"""DARE: drop task-vector entries at random and rescale the rest, then add (or elect and add)."""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.sparsify import Rescale, random_drop
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
from evomerge.merge.params import ResolvedParams

REFERENCE = "Yu et al., Language Models are Super Mario (DARE), ICML 2024 (arXiv 2311.03099)"
DENSITY = density_spec(0.1, doc="keep probability d = 1 − p of each entry (the paper drops p = 0.9)")


def rescale_of(params: ResolvedParams) -> Rescale:
    """How dropped task vectors are rescaled: ``None`` when ``rescale`` is off, else ``rescale_mode``."""
    if not params["rescale"]:
        return None
    return "l1" if params["rescale_mode"] == "l1" else "keep_probability"


def _dare(inputs: MergeInputs, params: ResolvedParams, method: str, sign_consensus: bool) -> torch.Tensor:
    generator = require_generator(inputs, method)
    densities = per_input(inputs, params, "density")
    rescale = rescale_of(params)

    def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
        return random_drop(delta, densities[i], generator, rescale)

    return merge_task_vectors(inputs, params, method=method, sparsify=sparsify, sign_consensus=sign_consensus)


@operator(
    "dare_linear",
    params=(weight_spec(), DENSITY, LAMBDA, normalize_spec(False), RESCALE_DROP, RESCALE_MODE, INT8_MASK),
    base="required",
    randomized=True,
    reference=REFERENCE,
)
def dare_linear(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + λ Σ_i w_i (m_i ⊙ τ_i) · s_i, m_i ~ Bernoulli(d_i) entry-wise (DARE, Yu et al., 2024).

    s_i = 1/d_i (``rescale_mode: keep_probability``, the paper's 1/(1−p): unbiased, E[m_i τ_i s_i] = τ_i)
    or ‖τ_i‖₁ / ‖m_i ⊙ τ_i‖₁ (``l1``, mergekit). The masks come from the plan's seeded generator.
    """
    return _dare(inputs, params, "dare_linear", sign_consensus=False)


@operator(
    "dare_ties",
    params=(
        weight_spec(),
        DENSITY,
        LAMBDA,
        normalize_spec(True, False),
        RESCALE_DROP,
        RESCALE_MODE,
        INT8_MASK,
    ),
    base="required",
    randomized=True,
    reference=REFERENCE,
)
def dare_ties(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """DARE's drop, then TIES's election: θ = θ0 + λ Σ_{i∈A} w_i τ̃_i (/ Σ_{i∈A} w_i with ``normalize``).

    τ̃_i is the dropped and rescaled task vector of ``dare_linear`` and A the models whose sign of w_i τ̃_i
    agrees with sign(Σ_i w_i τ̃_i) at each entry.

    No magnitude trim (as in mergekit). ``normalize`` defaults to the disjoint mean of the TIES step the
    paper applies; mergekit recipes default to the disjoint sum.
    """
    return _dare(inputs, params, "dare_ties", sign_consensus=True)
