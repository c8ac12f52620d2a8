"""The arithmetic that turns a group of experts (and their router rows) into one.

* :func:`weighted_merge`: W_g = Σ_e f̂_e W_e with f̂ the routing frequencies renormalised inside the group
  (MC-SMoE's "frequency-weighted merge"); a group no token was routed to is averaged uniformly.
* :func:`subspace_merge`: Sub-MoE's union decomposition. Per projection, [W_1 | … | W_k] (concatenated
  along the input dimension) = U Σ [V_1ᵀ | … | V_kᵀ], so all members share the output basis U; the
  merged matrix is U Σ (Σ_e f̂_e V_eᵀ). Kept at full rank this equals the weighted average exactly; the
  method's point is ``rank``: only the r leading shared directions are kept.
* :func:`low_rank_plus_sparse`: MC-SMoE's "compress" step, W ≈ UV + S with a rank-r truncated SVD and
  the residual S pruned to its largest-magnitude entries (by magnitude, as no training is run here; the
  paper prunes S by gradient sensitivity while fine-tuning).
* :func:`merge_router`: one router row per group, the frequency-weighted mean of the members' rows
  (``weighted``), or the most-routed member's row (``dominant``). Router logits are linear in the input, so
  the weighted row gives the group the weighted mean of its members' logits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from evomerge.moe.layout import ExpertStack

RouterMerge = Literal["weighted", "dominant"]


def group_weights(frequency: torch.Tensor | np.ndarray, group: list[int]) -> np.ndarray:
    """The members' routing frequencies renormalised to sum to 1 (uniform when all are zero)."""
    f = np.asarray(frequency, dtype=np.float64)[group]
    total = f.sum()
    return f / total if total > 0 else np.full(len(group), 1.0 / len(group))


def weighted_merge(members: ExpertStack, weights: np.ndarray) -> ExpertStack:
    """Σ_e w_e · expert_e, as a stack of one expert."""
    w = torch.as_tensor(weights, dtype=members.gate.dtype)

    def combine(t: torch.Tensor) -> torch.Tensor:
        return torch.einsum("e,e...->...", w, t).unsqueeze(0)

    return ExpertStack(combine(members.gate), combine(members.up), combine(members.down))


def shared_basis_merge(matrices: torch.Tensor, weights: np.ndarray, rank: int | None) -> torch.Tensor:
    """U_r Σ_r (Σ_e w_e V_e,rᵀ) from the SVD of the members' [d_out, d_in] matrices side by side."""
    k, d_out, d_in = matrices.shape
    joint = matrices.double().permute(1, 0, 2).reshape(d_out, k * d_in)
    u, s, vh = torch.linalg.svd(joint, full_matrices=False)
    w = torch.as_tensor(weights, dtype=torch.float64)
    v_merged = torch.einsum("e,qed->qd", w, vh.reshape(len(s), k, d_in))
    r = len(s) if rank is None else min(rank, len(s))
    return ((u[:, :r] * s[:r]) @ v_merged[:r]).to(matrices.dtype)


def subspace_merge(members: ExpertStack, weights: np.ndarray, rank: int | None) -> ExpertStack:
    """Sub-MoE's merge of one group, projection by projection, as a stack of one expert."""
    return ExpertStack(*(shared_basis_merge(getattr(members, p), weights, rank).unsqueeze(0)
                         for p in ("gate", "up", "down")))


def low_rank_plus_sparse(weight: torch.Tensor, rank: int, density: float) -> torch.Tensor:
    """A rank-``rank`` SVD truncation of ``weight`` plus the ``density`` fraction of its residual with the
    largest magnitude (dense again, as the checkpoint format has no factored experts)."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = max(1, min(rank, len(s)))
    low = (u[:, :r] * s[:r]) @ vh[:r]
    residual = weight.double() - low
    keep = round(density * residual.numel())
    sparse = torch.zeros_like(residual)
    if keep > 0:
        idx = residual.abs().reshape(-1).topk(keep).indices
        sparse.reshape(-1)[idx] = residual.reshape(-1)[idx]
    return (low + sparse).to(weight.dtype)


def compress_stack(experts: ExpertStack, rank_ratio: float, density: float) -> ExpertStack:
    """:func:`low_rank_plus_sparse` on every matrix of every expert; rank = ratio × the smaller side."""
    def each(t: torch.Tensor) -> torch.Tensor:
        rank = max(1, round(rank_ratio * min(t.shape[-2:])))
        return torch.stack([low_rank_plus_sparse(m, rank, density) for m in t])

    return ExpertStack(each(experts.gate), each(experts.up), each(experts.down))


def merge_router(router: torch.Tensor, groups: list[list[int]], weights: list[np.ndarray], mode: RouterMerge,
                 dominant: list[int] | None = None) -> torch.Tensor:
    """One row per group from the [E, H] router: the weighted mean of the members' rows, or the row of the
    group's ``dominant`` expert (default: its most-routed member)."""
    rows = []
    for i, (group, w) in enumerate(zip(groups, weights)):
        if mode == "dominant":
            rows.append(router[dominant[i] if dominant is not None else group[int(np.argmax(w))]])
        else:
            rows.append(torch.einsum("e,eh->h", torch.as_tensor(w, dtype=router.dtype), router[group]))
    return torch.stack(rows)
