"""Merges of K models on the unit hypersphere: multi-SLERP and the Karcher (Riemannian) mean."""

from __future__ import annotations

import math

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import per_input, weight_spec
from evomerge.merge.params import ParamSpec, ResolvedParams


@operator(
    "multislerp",
    params=(
        weight_spec(),
        ParamSpec("normalize_weights", bool, default=True, doc="divide the weights by their sum"),
        ParamSpec("eps", float, default=1e-8, low=0.0, doc="guard added to norms"),
    ),
    base="optional",
    reference="Goddard, Multi-SLERP (mergekit, goddard.blog/posts/multislerp-wow-what-a-cool-idea)",
)
def multislerp(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Barycentric interpolation on the sphere (mergekit's multislerp), per tensor.

    With x_i = θ_i − θ0 (or θ_i without a base), u_i = x_i/‖x_i‖ and weights w_i:
    μ = Σ w_i u_i / ‖Σ w_i u_i‖ and θ = θ0 + (Σ w_i ‖x_i‖) · μ.
    The construction's tangent-space step (project the u_i onto the tangent plane at μ, average, map back
    with the exponential map) is the identity here, because Σ_i w_i (u_i − ⟨u_i, μ⟩μ) = 0 exactly when μ is
    the normalised weighted mean; it is therefore not computed. Two antipodal inputs fall back to
    Σ w_i x_i; more inputs whose weighted directions cancel are an error. Inputs that all equal the
    base give the base (where mergekit raises).
    """
    tensors = inputs.tensors
    if len(tensors) == 1:
        return tensors[0]
    weights = per_input(inputs, params, "weight")
    if params["normalize_weights"]:
        total = sum(weights)
        weights = [w / total for w in weights]
    eps = float(params["eps"])
    base = inputs.base
    scratch = torch.empty_like(tensors[0])
    direction = torch.zeros_like(tensors[0])
    norms: list[float] = []
    for tensor, weight in zip(tensors, weights):
        x = tensor if base is None else torch.sub(tensor, base, out=scratch)
        norms.append(float(torch.linalg.vector_norm(x)))
        direction.add_(x, alpha=weight / (norms[-1] + eps))
    if max(norms) <= eps:  # every input sits on the origin: nothing to interpolate
        return torch.zeros_like(tensors[0]) if base is None else base.clone()
    direction_norm = float(torch.linalg.vector_norm(direction))
    if direction_norm < eps:
        if len(tensors) != 2:
            raise ConfigError(
                f"multislerp: the weighted unit directions cancel at {inputs.name} (antipodal inputs); "
                "change the weights"
            )
        result = torch.mul(tensors[0], weights[0]).add_(tensors[1], alpha=weights[1])
        return result if base is None else result.add_(base, alpha=1.0 - weights[0] - weights[1])
    direction.mul_(sum(w * n for w, n in zip(weights, norms)) / direction_norm)
    return direction if base is None else direction.add_(base)


@operator(
    "karcher",
    params=(
        weight_spec("input", mergekit_default=1.0),  # mergekit's karcher has no weights: a uniform mean
        ParamSpec("max_iter", int, default=10, low=1, doc="iterations of the fixed-point update"),
        ParamSpec("tol", float, default=1e-5, low=0.0, doc="stop when the tangent step is shorter than this"),
    ),
    base="ignored",
    reference="Karcher, Riemannian center of mass and mollifier smoothing, CPAM 1977; mergekit's karcher",
)
def karcher(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Weighted Karcher mean of the directions u_i = θ_i/‖θ_i‖ on the sphere, rescaled (Karcher, 1977).

    From the normalised mean direction u, repeat: T = Σ α_i (φ_i / sin φ_i)(u_i − cos φ_i · u) with
    φ_i = arccos⟨u, u_i⟩, u ← cos‖T‖ · u + sin‖T‖ · T/‖T‖, until ‖T‖ < tol or ``max_iter`` steps.
    Result: (Σ α_i ‖θ_i‖) · u with α_i = w_i / Σ w_j (equal weights by default, as in mergekit).
    Raw weights, no base; inputs of norm below ``tol`` take no part in the direction.
    """
    tensors = inputs.tensors
    if len(tensors) == 1:
        return tensors[0]
    weights = per_input(inputs, params, "weight")
    total = sum(weights)
    alphas = [w / total for w in weights]
    tol = float(params["tol"])
    norms = [float(torch.linalg.vector_norm(t)) for t in tensors]
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    units = torch.stack([tensors[i].reshape(-1) / norms[i] for i in valid])
    valid_total = sum(alphas[i] for i in valid)
    coeffs = torch.tensor([alphas[i] / valid_total for i in valid], dtype=units.dtype, device=units.device)
    mean = coeffs @ units
    mean_norm = float(torch.linalg.vector_norm(mean))
    mean = units[0].clone() if mean_norm < tol else mean.div_(mean_norm)
    for _ in range(int(params["max_iter"])):
        cosines = (units @ mean).clamp_(-1.0, 1.0)
        angles = torch.arccos(cosines)
        step = torch.where(angles < tol, torch.zeros_like(angles), coeffs * angles / torch.sin(angles))
        tangent = (step @ units).sub_(mean, alpha=float(step @ cosines))
        tangent_norm = float(torch.linalg.vector_norm(tangent))
        if tangent_norm < tol:
            break
        mean.mul_(math.cos(tangent_norm)).add_(tangent, alpha=math.sin(tangent_norm) / tangent_norm)
        unit_norm = float(torch.linalg.vector_norm(mean))
        if unit_norm > tol:
            mean.div_(unit_norm)
    scale = sum(a * n for a, n in zip(alphas, norms))
    return mean.mul_(scale).view(tensors[0].shape)
