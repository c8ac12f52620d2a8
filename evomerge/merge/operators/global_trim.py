"""Whole-model magnitude thresholds for TIES's global trim, in bounded memory.

The TIES paper keeps the top-k% of each task vector *over the whole model*. Holding K flattened models to
sort them is what makes reference implementations need (K+1)·N floats; here two streaming passes over the
tensors suffice and memory is O(K · 2^16) counters:

* pass 0 histograms the top 16 bits of every |τ_i| (float32 bit patterns order like the values) and counts
  the entries, which fixes the rank of the threshold and the bucket that holds it;
* pass 1 histograms the low 16 bits of the entries inside that bucket, which gives the exact value.

The threshold equals ``torch.kthvalue`` over the concatenated magnitudes.
"""

from __future__ import annotations

from typing import Any

import torch

from evomerge.merge.operator import MergeInputs
from evomerge.merge.operators.selection import (
    HIGH_BINS,
    LOW_BINS,
    compose,
    locate,
    low_histogram,
    magnitude_bits,
)
from evomerge.merge.operators.support import per_input, require_base
from evomerge.merge.params import ResolvedParams

STATS_KEY = "trim_thresholds"


class GlobalTrimThresholds:
    """GlobalPass: per model, the k-th largest |τ_i| over all merged tensors, k = int(d_i · N)."""

    n_passes = 2

    def __init__(self) -> None:
        self._high: list[torch.Tensor] = []
        self._low: list[torch.Tensor] = []
        self._count: list[int] = []
        self._budget: list[float] = []
        self._densities: list[set[float]] = []
        self._target: list[tuple[int, int, int]] = []
        """Per model: (rank of the threshold from the bottom, its top-bits bucket, entries in lower buckets)."""
        self._thresholds: list[float] = []

    def start(self, n_models: int) -> None:
        self._high = [torch.zeros(HIGH_BINS, dtype=torch.int64) for _ in range(n_models)]
        self._low = [torch.zeros(LOW_BINS, dtype=torch.int64) for _ in range(n_models)]
        self._count = [0] * n_models
        self._budget = [0.0] * n_models
        self._densities = [set() for _ in range(n_models)]

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None:
        base = require_base(inputs, "ties")
        densities = per_input(inputs, params, "density")
        for i, (tensor, density) in enumerate(zip(inputs.tensors, densities)):
            bits = magnitude_bits(torch.sub(tensor, base).abs_())
            high_bits = bits >> 16
            if pass_index == 0:
                self._high[i] += torch.bincount(high_bits, minlength=HIGH_BINS).cpu()
                self._count[i] += bits.numel()
                self._budget[i] += density * bits.numel()
                self._densities[i].add(density)
            else:
                self._low[i] += low_histogram(bits, high_bits, self._target[i][1]).cpu()

    def end_pass(self, pass_index: int) -> None:
        if pass_index == 0:
            self._target = [self._locate(i) for i in range(len(self._high))]
            return
        self._thresholds = []
        for i, (rank, high, below) in enumerate(self._target):
            if rank == 0:
                self._thresholds.append(0.0)
                continue
            low, _ = locate(self._low[i], rank - below)
            self._thresholds.append(compose(high, low))

    def finish(self) -> dict[str, Any]:
        return {STATS_KEY: list(self._thresholds)}

    def kept_count(self, i: int) -> int:
        """How many entries of model i the trim keeps: ``int(d · N)`` (at least 1), as per tensor.

        With a density that varies over tensors (a gradient) it is the sum of the per-tensor budgets.
        """
        if self._count[i] == 0:
            return 0
        densities = self._densities[i]
        budget = next(iter(densities)) * self._count[i] if len(densities) == 1 else self._budget[i]
        return min(self._count[i], max(1, int(budget)))

    def _locate(self, i: int) -> tuple[int, int, int]:
        kept = self.kept_count(i)
        if kept == 0:
            return 0, 0, 0
        rank = self._count[i] - kept + 1  # the k-th largest is the (N − k + 1)-th smallest
        high, below = locate(self._high[i], rank)
        return rank, high, below
