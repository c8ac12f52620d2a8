"""Neuron permutation alignment of one expert to another (MC-SMoE's step before averaging).

An expert's intermediate neurons can be reordered without changing what it computes: row i of gate and
up and column i of down belong together. Two experts trained apart rarely number their neurons alike, so
averaging them as stored mixes unrelated neurons. Weight matching pairs neuron i of the reference with
neuron j of the other by maximising Σ_i ⟨g_ref,i, g_j⟩ + ⟨u_ref,i, u_j⟩ + ⟨d_ref,:i, d_:j⟩ over
permutations (a linear assignment, scipy's ``linear_sum_assignment``), then reorders the other expert.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from evomerge.moe.layout import ExpertStack


def matching_permutation(reference: ExpertStack, other: ExpertStack) -> np.ndarray:
    """``perm`` with ``other``'s neuron ``perm[i]`` matched to the reference's neuron i (one expert each)."""
    score = (reference.gate[0] @ other.gate[0].T + reference.up[0] @ other.up[0].T
             + reference.down[0].T @ other.down[0])
    rows, cols = linear_sum_assignment(score.double().numpy(), maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def permute_neurons(expert: ExpertStack, perm: np.ndarray) -> ExpertStack:
    """The same function with its intermediate neurons reordered: neuron i becomes old neuron ``perm[i]``."""
    index = torch.as_tensor(perm, dtype=torch.long)
    return ExpertStack(expert.gate[:, index], expert.up[:, index], expert.down[:, :, index])


def align_to(reference: ExpertStack, other: ExpertStack) -> ExpertStack:
    """``other`` with its neurons reordered to best match ``reference``'s (both single experts)."""
    return permute_neurons(other, matching_permutation(reference, other))
