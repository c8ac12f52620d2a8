"""Whole-model magnitude thresholds for TIES's global trim, in bounded memory.

The TIES paper keeps the top-k% of each task vector *over the whole model*. Holding K flattened models to
sort them is what makes reference implementations need (K+1)·N floats; here two streaming passes over the
tensors suffice, each tensor walked in cache-sized spans, and memory is O(K · 2^16) counters
(``MagnitudeStream``):

* pass 0 histograms the top 16 bits of every |τ_i| (float32 bit patterns order like the values) and counts
  the entries, which fixes the rank of the threshold and the bucket that holds it;
* pass 1 histograms the low 16 bits of the entries inside that bucket, which gives the exact value.

The threshold equals ``torch.kthvalue`` over the concatenated magnitudes.
"""

from __future__ import annotations

from typing import Any

import torch

from evomerge.merge.operator import MergeInputs
from evomerge.merge.operators.chunks import flat, scratch, span_size, spans
from evomerge.merge.operators.selection import MagnitudeStream
from evomerge.merge.operators.support import per_input, require_base
from evomerge.merge.params import ResolvedParams

STATS_KEY = "trim_thresholds"


class GlobalTrimThresholds:
    """GlobalPass: per model, the k-th largest |τ_i| over all merged tensors, k = int(d_i · N)."""

    n_passes = 2

    def __init__(self, method: str = "ties") -> None:
        self.method = method
        """The operator that uses this pass, named in its errors."""
        self._streams: list[MagnitudeStream] = []
        self._budget: list[float] = []
        self._densities: list[set[float]] = []
        self._selected: list[bool] = []
        """Per model: whether a threshold is selected (False when nothing is trimmed)."""
        self._thresholds: list[float] = []

    def start(self, n_models: int) -> None:
        self._streams = [MagnitudeStream() for _ in range(n_models)]
        self._budget = [0.0] * n_models
        self._densities = [set() for _ in range(n_models)]

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None:
        base = require_base(inputs, self.method)
        densities = per_input(inputs, params, "density")
        flat_base, chunk = flat(base), span_size(base)
        (buf,) = scratch(base, 1, chunk)
        for i, (tensor, density) in enumerate(zip(inputs.tensors, densities)):
            if pass_index == 0:
                self._budget[i] += density * base.numel()
                self._densities[i].add(density)
            elif not self._selected[i]:
                continue
            stream, x = self._streams[i], flat(tensor)
            for start, stop in spans(base.numel(), chunk):
                magnitudes = torch.sub(x[start:stop], flat_base[start:stop], out=buf[: stop - start]).abs_()
                if pass_index == 0:
                    stream.add_high(magnitudes)
                else:
                    stream.add_low(magnitudes)

    def end_pass(self, pass_index: int) -> None:
        if pass_index == 0:
            self._selected = []
            for i, stream in enumerate(self._streams):
                kept = self.kept_count(i)
                self._selected.append(kept > 0)
                if kept > 0:
                    stream.target(stream.count - kept + 1)  # the k-th largest is the (N − k + 1)-th smallest
            return
        self._thresholds = [
            stream.result().value if selected else 0.0 for stream, selected in zip(self._streams, self._selected)
        ]

    def finish(self) -> dict[str, Any]:
        return {STATS_KEY: list(self._thresholds)}

    def kept_count(self, i: int) -> int:
        """How many entries of model i the trim keeps: ``int(d · N)`` (at least 1), as per tensor.

        With a density that varies over tensors (a gradient) it is the sum of the per-tensor budgets.
        """
        count = self._streams[i].count
        if count == 0:
            return 0
        densities = self._densities[i]
        budget = next(iter(densities)) * count if len(densities) == 1 else self._budget[i]
        return min(count, max(1, int(budget)))
