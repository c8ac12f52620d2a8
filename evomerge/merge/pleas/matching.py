"""Step 1 of PLeaS: match the hidden units of one layer across models, and choose which to merge.

Hidden units of an MLP can be permuted freely (rows of one layer and columns of the next) without changing
its function, so two independently trained or fine-tuned models rarely number the "same" unit alike. Each
model's units are matched to those of the anchor (the first model) by the correlation of their activations
on the same calibration rows, as a linear assignment problem (``scipy.optimize.linear_sum_assignment``,
maximising the summed correlation; Nasery et al. match on activation inner products, Git Re-Basin and
ZipIt! on correlations, which do not depend on each unit's scale).

Partial merging (PLeaS §3.2): only the best-matched groups are merged into one unit; the worst-matched
ones are kept, one unit per model, side by side, so the merged layer is wider. With K models and ``n``
units, keeping ``u`` groups apart gives width ``(n − u) + K·u``; ``width_ratio`` ρ = width / n runs from 1
(every unit merged: the permute-and-average case) to K (nothing merged: the K models side by side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from evomerge.errors import ConfigError


@dataclass(frozen=True)
class UnitGroups:
    """How the units of one layer of K models become the units of the merged layer.

    The merged layer lists the ``merged`` units first (unit ``i`` averages unit ``merged[i, k]`` of each
    model k, in the anchor's order), then ``kept[0]`` (model 0's own units), ``kept[1]``, and so on.
    For every model, its column of ``merged`` and its ``kept`` entry together hold each of its units once.
    """

    merged: torch.Tensor
    """[m, K] long: the unit of each model that merged unit i averages."""
    kept: tuple[torch.Tensor, ...]
    """One long tensor per model: its units kept on their own, ascending."""

    @property
    def n_models(self) -> int:
        return len(self.kept)

    @property
    def n_merged(self) -> int:
        return int(self.merged.shape[0])

    @property
    def width(self) -> int:
        return self.n_merged + sum(len(k) for k in self.kept)

    def kept_slice(self, k: int) -> slice:
        """Where model k's kept units sit in the merged layer."""
        start = self.n_merged + sum(len(self.kept[j]) for j in range(k))
        return slice(start, start + len(self.kept[k]))

    @classmethod
    def identity(cls, n_units: int, n_models: int) -> UnitGroups:
        """Units every model shares as they are (the input features, the output classes): all merged."""
        idx = torch.arange(n_units)
        empty = torch.zeros(0, dtype=torch.long)
        return cls(idx[:, None].repeat(1, n_models), tuple(empty for _ in range(n_models)))


def kept_count(n_units: int, n_models: int, width_ratio: float) -> int:
    """Groups kept apart so that the merged width is ``width_ratio × n_units`` (rounded to a whole unit)."""
    if not 1.0 <= width_ratio <= n_models:
        raise ConfigError(f"must lie in [1, {n_models}] for {n_models} models, got {width_ratio}", "width_ratio")
    if n_models == 1:
        return 0
    return round(n_units * (width_ratio - 1.0) / (n_models - 1))


def correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation of every column of ``a`` [N, n] with every column of ``b`` [N, p]: [n, p].

    A constant unit (a ReLU that never fires) correlates 0 with everything rather than NaN.
    """
    a64, b64 = a.double(), b.double()
    a64 = a64 - a64.mean(0)
    b64 = b64 - b64.mean(0)
    cov = a64.T @ b64 / max(len(a64) - 1, 1)
    std_a = a64.square().sum(0).div(max(len(a64) - 1, 1)).sqrt()
    std_b = b64.square().sum(0).div(max(len(b64) - 1, 1)).sqrt()
    return cov / (std_a[:, None] * std_b[None, :]).clamp_min(eps)


def match_units(anchor: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit of ``other`` matched to each unit of ``anchor`` (a permutation), and each pair's correlation.

    Both are [N, n] activations on the same rows. Ties (identical units) resolve the same way every time:
    the solver is deterministic.
    """
    if anchor.shape != other.shape:
        raise ValueError(f"activations of different shapes: {list(anchor.shape)} and {list(other.shape)}")
    corr = correlation(anchor, other)
    rows, cols = linear_sum_assignment(corr.numpy(), maximize=True)
    perm = torch.from_numpy(np.asarray(cols, dtype=np.int64)[np.argsort(rows)])
    return perm, corr[torch.arange(len(perm)), perm]


def match_layer(activations: Sequence[torch.Tensor], n_kept: int, permute: bool = True) -> UnitGroups:
    """Match every model's units to the anchor's (``activations[0]``) and keep the ``n_kept`` groups
    with the lowest mean correlation apart (ties broken by the anchor's unit index).

    ``permute=False`` pairs unit i with unit i (fine-tunes of one base, whose units still line up) and only
    uses the correlations to choose which groups to keep apart.
    """
    n_units = activations[0].shape[1]
    if not 0 <= n_kept <= n_units:
        raise ValueError(f"n_kept must lie in [0, {n_units}], got {n_kept}")
    columns = [torch.arange(n_units)]
    scores = torch.zeros(n_units, dtype=torch.float64)
    for other in activations[1:]:
        if permute:
            perm, score = match_units(activations[0], other)
        else:
            perm, score = torch.arange(n_units), torch.diagonal(correlation(activations[0], other))
        columns.append(perm)
        scores += score
    groups = torch.stack(columns, dim=1)
    order = np.lexsort((np.arange(n_units), -scores.numpy()))  # best-matched first, then by unit index
    merge_rows = torch.from_numpy(np.sort(order[: n_units - n_kept]))
    keep_rows = torch.from_numpy(np.sort(order[n_units - n_kept :]))
    kept = tuple(torch.sort(groups[keep_rows, k]).values for k in range(len(activations)))
    return UnitGroups(groups[merge_rows], kept)
