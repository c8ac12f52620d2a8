"""Sparsifiers of one task vector: magnitude trim (TIES), outlier window (Breadcrumbs), random drop (DARE)
and magnitude-ranked random drop (DELLA's MagPrune).

Each works in place on a scratch task vector the caller owns and returns it. Counts follow mergekit
(``int(density · n)`` entries, at least one for the TIES trim) so mergekit recipes select the same entries;
selections use exact order statistics (``selection.py``) instead of a full sort.
"""

from __future__ import annotations

from typing import Literal

import torch

from evomerge.merge.operators.selection import rank_window_mask

Rescale = Literal["l1", "keep_probability"] | None
L1_EPS = 1e-7
"""Below this L1 norm (before or after the drop) mergekit leaves the masked vector unscaled."""


def trim_to_top(delta: torch.Tensor, density: float, rescale: Rescale = None) -> torch.Tensor:
    """Keep the ``max(1, int(d·n))`` largest magnitudes of ``delta`` (TIES's trim), zero the rest."""
    if density >= 1:
        return delta
    n = delta.numel()
    k = max(1, int(density * n))
    before = _l1(delta) if rescale == "l1" else None
    delta.masked_fill_(rank_window_mask(delta.abs(), n - k, n).logical_not_(), 0.0)
    return _rescale_l1(delta, before)


def trim_below(delta: torch.Tensor, threshold: float, rescale: Rescale = None) -> torch.Tensor:
    """Zero the entries of magnitude below ``threshold`` (TIES's whole-model trim; ties are kept)."""
    before = _l1(delta) if rescale == "l1" else None
    delta.masked_fill_(delta.abs() < threshold, 0.0)
    return _rescale_l1(delta, before)


def keep_window(delta: torch.Tensor, density: float, gamma: float, rescale: Rescale = None) -> torch.Tensor:
    """Breadcrumbs: drop the largest ``int(γ·n)`` magnitudes, then the smallest until ``int(d·n)`` remain.

    When ``d + γ > 1`` fewer outliers are dropped so that the density is still met (as mergekit does).
    """
    if density >= 1:
        return delta
    n = delta.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    before = _l1(delta) if rescale == "l1" else None
    delta.masked_fill_(rank_window_mask(delta.abs(), n_bottom, n_bottom + target).logical_not_(), 0.0)
    return _rescale_l1(delta, before)


def random_drop(
    delta: torch.Tensor, density: float, generator: torch.Generator, rescale: Rescale
) -> torch.Tensor:
    """DARE: keep each entry with probability d, independently (seeded from ``generator``)."""
    if density >= 1:
        return delta
    before = _l1(delta) if rescale == "l1" else None
    keep = torch.rand(delta.shape, generator=generator, dtype=delta.dtype, device=delta.device)
    delta.mul_(keep.lt_(density))
    if rescale == "keep_probability":
        return delta.div_(density)
    return _rescale_l1(delta, before)


def magnitude_sampled_drop(
    delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator, rescale: Rescale
) -> torch.Tensor:
    """DELLA's MagPrune: per row, the entry of normalised magnitude rank r ∈ [0, 1] is kept with
    probability q = d − ε + 2ε·r (larger entries are kept more often).

    Rows are the first axis (a vector is one row); higher-order tensors are ranked over their flattened
    trailing axes. A one-entry row gets q = d.
    """
    if density >= 1 or delta.numel() == 0:
        return delta
    rows = delta.view(delta.shape[0], -1) if delta.dim() >= 2 else delta.view(1, -1)
    before = _l1(delta) if rescale == "l1" else None
    n_cols = rows.shape[1]
    keep_prob = torch.empty_like(rows)
    if n_cols > 1:
        by_rank = torch.linspace(
            density - epsilon, density + epsilon, n_cols, dtype=rows.dtype, device=rows.device
        )
        order = rows.abs().argsort(dim=1, stable=True)
        keep_prob.scatter_(1, order, by_rank.expand_as(rows))
    else:
        keep_prob.fill_(density)
    draw = torch.rand(rows.shape, generator=generator, dtype=rows.dtype, device=rows.device)
    rows.mul_(draw.lt_(keep_prob))
    if rescale == "keep_probability":
        rows.div_(keep_prob)
        return delta
    return _rescale_l1(delta, before)


def _l1(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor, ord=1))


def _rescale_l1(delta: torch.Tensor, before: float | None) -> torch.Tensor:
    """Scale the masked ``delta`` back to the L1 norm it had before masking (mergekit's ``rescale``)."""
    if before is None:
        return delta
    after = _l1(delta)
    if before < L1_EPS or after < L1_EPS:
        return delta
    return delta.mul_(before / after)
