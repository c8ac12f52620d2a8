"""TIES on one float32 weight, streamed in cache-sized spans: exact trim, sign election, disjoint mean.

The whole-tensor formulation (``task_vectors.py``) makes about twenty full-size passes through main memory
per weight (task vectors, magnitudes, masks, four accumulators). Here each span of the weight goes through
every step while it sits in the L2 cache: the inputs stream from memory twice (the selection pass of
``trim_rules.py`` and this merge pass), the output is written once, and nothing allocated grows with the
weight (the result goes into the buffer the executor offers). Accelerators run it with one span per weight;
CPUs run its compiled twin (``ties_kernels.py``), which gives the same numbers.

The trim keeps the entries ``trim_to_top`` / ``trim_below`` keep (the exact k-th largest magnitude, ties at
it kept or dropped by flat position). The election and the mean are ``_sum_agreeing``'s: γ = sign(Σ_i w_i τ̂_i)
and, per entry, Σ_{i∈A} w_i τ̂_i / Σ_{i∈A} w_i over the agreeing models A, here summed directly (as Σ |w_i τ̂_i|
signed by γ) instead of as E − P, which is at least as accurate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.merge.operators.chunks import flat, scratch, spans
from evomerge.merge.operators.trim_rules import TrimRule


class _SpanMerger:
    """The merge pass over one weight; ``merge`` handles one span and writes it to ``out``."""

    def __init__(
        self, tensors: Sequence[torch.Tensor], base: torch.Tensor, weights: list[float], rules: list[TrimRule],
        *, normalize: bool, scale: float, out: torch.Tensor, chunk: int,
    ) -> None:
        self.flats, self.base, self.out = [flat(t) for t in tensors], flat(base), flat(out)
        self.weights, self.rules, self.normalize, self.scale = weights, rules, normalize, scale
        self.shrink = [rule.shrink for rule in rules]
        self.deltas = scratch(base, len(tensors), chunk)
        self.elect, self.gamma, self.total, self.divisor, self.part = scratch(base, 5, chunk)
        (self.flag,) = scratch(base, 1, chunk, torch.bool)
        self.ones = torch.ones(self.flag.numel(), dtype=base.dtype, device=base.device)
        self.min_weight = min(weights)

    def _trim(self, i: int, delta: torch.Tensor, start: int) -> None:
        rule = self.rules[i]
        if rule.value == 0:  # keeps everything (dropping exact zeros changes nothing)
            return
        torch.hardshrink(delta, self.shrink[i], out=delta)
        if rule.drops is not None:
            bounds = torch.tensor([start, start + delta.numel()], device=rule.drops.device)
            first, last = torch.searchsorted(rule.drops, bounds).tolist()
            if first < last:
                delta[rule.drops[first:last] - start] = 0.0

    def _elected_signs(self, elect: torch.Tensor, zero_positive: bool, out: torch.Tensor) -> torch.Tensor:
        """γ = ±1 per entry, with the given sign where the election is 0.

        ``copysign(1, E)`` is + for E = +0: models that cancel exactly sum to +0 in IEEE arithmetic, and −0
        arises only where every trimmed entry is zero, where no model agrees whatever γ is.
        """
        if zero_positive:
            return torch.copysign(self.ones[: out.numel()], elect, out=out)
        return out.copy_(torch.where(elect > 0, 1.0, -1.0))

    def merge(self, start: int, stop: int, zero_positive: bool, count_signs: bool) -> tuple[int, bool]:
        """Merge ``[start, stop)``; γ = + where the election is exactly 0 when ``zero_positive``.

        With ``count_signs`` returns (Σ sign(election), whether some entry's election cancelled exactly with
        models on both sides), which the ``majority`` zero-sign rule needs over the whole tensor.
        """
        m = stop - start
        base = self.base[start:stop]
        deltas = []
        for i, (x, weight) in enumerate(zip(self.flats, self.weights)):
            delta = torch.sub(x[start:stop], base, out=self.deltas[i][:m])
            self._trim(i, delta, start)
            if weight != 1:
                delta.mul_(weight)
            deltas.append(delta)
        elect = deltas[0]
        if len(deltas) > 1:
            elect = torch.add(deltas[0], deltas[1], out=self.elect[:m])
            for delta in deltas[2:]:
                elect.add_(delta)
        gamma = self._elected_signs(elect, zero_positive, self.gamma[:m])
        # |w_i τ̂_i| where model i agrees with γ, else 0; its sign is the indicator of agreement
        total = torch.mul(deltas[0], gamma, out=self.total[:m]).clamp_(min=0)
        divisor = self._divisor(total, 0, None)
        for i, delta in enumerate(deltas[1:], start=1):
            part = torch.mul(delta, gamma, out=self.part[:m]).clamp_(min=0)
            total.add_(part)
            divisor = self._divisor(part, i, divisor)
        balance, cancelled = 0, False
        if count_signs:
            balance = int(torch.sign(elect).sum())
            cancelled = bool(((elect == 0) & (total > 0)).any())
        if divisor is None:  # the plain sum: divide by γ = ±1 to sign it
            divisor = gamma
        else:
            if self.min_weight > 0:  # no agreeing model ⇔ divisor 0 ⇔ total 0: any positive divisor gives 0
                divisor.clamp_(min=self.min_weight)
            else:
                divisor.masked_fill_(torch.eq(divisor, 0, out=self.flag[:m]), 1.0)
            divisor.mul_(gamma)
        torch.addcdiv(base, total, divisor, value=self.scale, out=self.out[start:stop])
        return balance, cancelled

    def _divisor(self, agreeing: torch.Tensor, i: int, divisor: torch.Tensor | None) -> torch.Tensor | None:
        """Add w_i · 1[model i agrees] to the divisor (only with ``normalize``); ``agreeing`` is ≥ 0."""
        if not self.normalize:
            return None
        if divisor is None:
            divisor = torch.sign(agreeing, out=self.divisor[: agreeing.numel()])
            return divisor.mul_(self.weights[0]) if self.weights[0] != 1 else divisor
        return divisor.add_(agreeing.sign_(), alpha=self.weights[i])


def ties_stream(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    weights: list[float],
    rules: list[TrimRule],
    *,
    zero_sign: str,
    normalize: bool,
    scale: float,
    out: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """θ0 + λ · γ Σ_{i∈A} |w_i τ̂_i| / Σ_{i∈A} w_i, written into ``out`` (float32, ``base``'s shape).

    ``zero_sign = majority`` elects, where the election is exactly 0, the sign most entries of the tensor
    elect: spans are merged with + first, and the few spans with such an entry are merged again once the
    tensor's balance turns out negative.
    """
    merger = _SpanMerger(tensors, base, weights, rules, normalize=normalize, scale=scale, out=out, chunk=chunk)
    majority = zero_sign == "majority"
    balance = 0
    redo: list[tuple[int, int]] = []
    for start, stop in spans(base.numel(), chunk):
        span_balance, cancelled = merger.merge(start, stop, zero_positive=True, count_signs=majority)
        balance += span_balance
        if cancelled:
            redo.append((start, stop))
    if balance < 0:
        for start, stop in redo:
            merger.merge(start, stop, zero_positive=False, count_signs=False)
    return out
