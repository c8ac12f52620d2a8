"""Step 2 of PLeaS: refit each merged layer by least squares to the original models' activations.

For one block of output rows with allowed input columns S (``blocks.row_blocks``), the refit solves

    W_S = argmin_W ‖X_S Wᵀ − Y‖² + r ‖W − W0_S‖²

in closed form, with X the merged layer's inputs (plus a ones column for the bias), Y its targets and W0 the
starting block weights. Nasery et al. run 400 Adam steps on the same objective from W0 (without the r term);
gradient descent from W0 converges to the least-squares solution *closest to W0*, which is the limit of this
closed form as r → 0, so directions the calibration rows never span (an always-black pixel) keep their
permute-and-average weights instead of being zeroed. ``ridge`` is relative: r = ridge × the mean eigenvalue
of X_Sᵀ X_S. Everything is solved in float64 through one eigendecomposition per block, which also serves
r = 0 on rank-deficient inputs (the minimum-change solution).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.merge.pleas.blocks import RowBlock


def refit_towards(x: torch.Tensor, y: torch.Tensor, init: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W ‖x Wᵀ − y‖² + r‖W − init‖² for x [N, d], y [N, m], init [m, d] (r relative, see above)."""
    x64, y64, w0 = x.double(), y.double(), init.double()
    residual = y64 - x64 @ w0.T
    evals, evecs = torch.linalg.eigh(x64.T @ x64)
    evals = evals.clamp_min(0.0)
    shift = ridge * float(evals.mean()) if len(evals) else 0.0
    cutoff = float(evals.max()) * len(evals) * torch.finfo(torch.float64).eps if len(evals) else 0.0
    inverse = torch.where(evals > cutoff, 1.0 / (evals + shift), torch.zeros_like(evals))
    delta = evecs @ (inverse[:, None] * (evecs.T @ (x64.T @ residual)))
    return w0 + delta.T


def refit_layer(x: torch.Tensor, y: torch.Tensor, init: torch.Tensor, blocks: Sequence[RowBlock],
                ridge: float) -> torch.Tensor:
    """The merged layer's [out, in + 1] weight: each row block refit on its allowed columns of ``x``
    (which already carries the ones column), every other entry left at 0."""
    out = torch.zeros_like(init, dtype=torch.float64)
    for block in blocks:
        cols = block.columns
        out[block.rows, cols] = refit_towards(x[:, cols], y[:, block.rows], init[block.rows][:, cols], ridge)
    return out


def layer_mse(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean squared error of a [out, in + 1] weight on inputs x (with ones column) against targets y."""
    return float((x.double() @ weight.double().T - y.double()).square().mean())
