"""Which entries TIES's per-tensor trim keeps: the exact k-th largest |θ_i − θ0|, in one streaming pass.

``trim_to_top`` keeps the ``k = max(1, int(d·n))`` largest magnitudes, ties broken by flat position. The
k-th largest value v and the positions of the entries equal to v that rank below the k kept (the first
ones in flat order; usually none) describe that set completely (``TrimRule``). Finding v exactly usually
takes one pass over the weight:

1. a seeded random sample of 16k magnitudes brackets the k-th largest in a window [lo, hi] whose edges
   sit five standard deviations of the sample quantile away from it;
2. the pass counts the magnitudes above ``hi`` and gathers the few inside the window (a few percent);
3. if the k-th largest fell inside the window (nearly always), a partition of the gathered values gives
   it exactly; otherwise, or when the window holds too many values (heavy ties), the two-pass radix
   select of ``MagnitudeStream`` does, in bounded memory.

The sample decides only the speed, never the result. The pass is a compiled loop over numpy views of the
CPU tensors, one slice of the weight per thread (``ties_kernels.py``). Accelerators take the whole-tensor
radix select, small tensors ``kthvalue``. Tied entries to drop are looked up only in the slices whose
gathered values hold v.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from evomerge.merge.operators.chunks import flat, scratch, spans
from evomerge.merge.operators.selection import MagnitudeRanks, MagnitudeStream, OrderStatistic

SAMPLE = 1 << 14
SIGMAS = 5.0
SMALL = 1 << 16
"""Tensors up to this many entries are ranked whole."""
SAMPLE_SEED = 0


@dataclass(frozen=True, eq=False)
class TrimRule:
    """The entries of |τ| a magnitude trim keeps: those of magnitude ≥ ``value`` except the tied ones at
    the flat positions ``drops`` (sorted; the ties that rank below the k kept). ``value = 0`` keeps all."""

    value: float = 0.0
    drops: torch.Tensor | None = None

    @property
    def shrink(self) -> float:
        """The largest float32 below ``value``: ``hardshrink`` with it keeps exactly |τ| ≥ ``value``."""
        value = torch.tensor(self.value, dtype=torch.float32)
        return float(torch.nextafter(value, torch.zeros_like(value)))


KEEP_ALL = TrimRule()


@dataclass
class _Window:
    """The gathering state of one model's selection."""

    index: int
    k: int
    lo: np.float32
    hi: np.float32
    above: int = 0
    gathered: int = 0
    cap: int = 0
    parts: list[np.ndarray] | None = None

    def result(self, n: int) -> OrderStatistic | None:
        """The k-th largest with its counts, or None when the window missed it or overflowed."""
        if self.parts is None:
            return None
        inside = self.k - self.above  # rank of the k-th largest among the gathered, from the top
        if not 1 <= inside <= self.gathered:
            return None
        values = np.concatenate(self.parts) if self.parts else np.empty(0, np.float32)
        position = values.size - inside
        value = np.partition(values, position)[position]
        greater = self.above + int(np.count_nonzero(values > value))
        equal = int(np.count_nonzero(values == value))
        return OrderStatistic(float(value), n - greater - equal, equal)

    def spans_holding(self, value: float) -> list[int]:
        """Indices of the spans whose gathered values include ``value``."""
        assert self.parts is not None
        return [s for s, part in enumerate(self.parts) if part.size and bool((part == value).any())]


def tensor_trim_rules(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, densities: list[float], chunk: int
) -> list[TrimRule]:
    """Per model, the rule that keeps the ``max(1, int(d_i·n))`` largest |θ_i − θ0| of this tensor."""
    n = base.numel()
    rules = [KEEP_ALL] * len(tensors)
    wanted = {i: max(1, int(d * n)) for i, d in enumerate(densities) if d < 1 and max(1, int(d * n)) < n}
    if not wanted:
        return rules
    flat_base, flats = flat(base), [flat(t) for t in tensors]
    found: dict[int, tuple[OrderStatistic, int, _Window | None]] = {}  # statistic, span, its window
    if base.device.type != "cpu" or n <= SMALL:
        for i, k in wanted.items():
            found[i] = _whole(torch.sub(flats[i], flat_base).abs_(), n - k + 1), n, None
    else:
        windows, span = _gather(flats, flat_base, wanted)
        for gathered in windows:
            stat = gathered.result(n)
            if stat is not None:
                found[gathered.index] = stat, span, gathered
        missed = {i: k for i, k in wanted.items() if i not in found}
        for i, stat in _radix(flats, flat_base, missed, chunk).items():
            found[i] = stat, chunk, None
    for i, (stat, span, window) in found.items():
        skip = (n - wanted[i]) - stat.n_less  # ties ranked below the k kept: the first ones in flat order
        drops = None
        if skip and stat.value != 0:  # (dropping zeros changes nothing)
            tie_spans = window.spans_holding(stat.value) if window is not None else None
            drops = _tie_positions(flats[i], flat_base, stat.value, skip, span, tie_spans)
        rules[i] = TrimRule(stat.value, drops)
    return rules


def _tie_positions(
    x: torch.Tensor, base: torch.Tensor, value: float, count: int, span: int, tie_spans: list[int] | None
) -> torch.Tensor:
    """Flat positions of the first ``count`` entries with |x − base| = ``value``, looking only in the
    spans listed (all of them, in order, when None)."""
    n = base.numel()
    order = range((n + span - 1) // span) if tie_spans is None else tie_spans
    found: list[torch.Tensor] = []
    for index in order:
        start, stop = index * span, min(n, (index + 1) * span)
        ties = (torch.sub(x[start:stop], base[start:stop]).abs_() == value).nonzero().squeeze(1)
        found.append(ties[:count] + start)
        count -= found[-1].numel()
        if count == 0:
            break
    return torch.cat(found)


def _whole(magnitudes: torch.Tensor, rank: int) -> OrderStatistic:
    """The rank-th smallest of a whole tensor: a radix select on large ones, ``kthvalue`` on small ones."""
    if magnitudes.numel() > SMALL:
        return MagnitudeRanks(magnitudes).kth_smallest(rank)
    values = magnitudes.to(torch.float32)
    value = values.kthvalue(rank).values
    return OrderStatistic(float(value), int((values < value).sum()), int((values == value).sum()))


@functools.lru_cache(maxsize=8)
def _sample_positions(n: int) -> np.ndarray:
    """Seeded uniform positions (the same for every tensor of this size, so drawn once)."""
    return np.sort(np.random.default_rng(SAMPLE_SEED).integers(0, n, SAMPLE))


def _bracket(x: np.ndarray, base: np.ndarray, index: int, k: int) -> _Window:
    """The sample window around the k-th largest magnitude of x − base."""
    n = base.size
    picks = _sample_positions(n)
    sample = np.abs(x[picks] - base[picks])
    quantile = (n - k + 0.5) / n  # of the k-th largest, from the bottom
    middle = quantile * SAMPLE
    margin = SIGMAS * math.sqrt(SAMPLE * quantile * (1 - quantile)) + 2
    low, high = math.floor(middle - margin), math.ceil(middle + margin)
    edges = [e for e in (low, high) if 0 <= e < SAMPLE]
    if edges:
        sample.partition(edges)
    lo = sample[low] if low >= 0 else np.float32(0)
    hi = sample[high] if high < SAMPLE else np.float32(np.inf)
    return _Window(index, k, np.float32(lo), np.float32(hi), cap=n // 8 + SAMPLE, parts=[])


def _gather(flats: list[torch.Tensor], base: torch.Tensor, wanted: dict[int, int]) -> tuple[list[_Window], int]:
    """The streaming pass (compiled, one slice of the weight per thread): per model, count the magnitudes
    above its window and gather those inside. Also returns the slice length (the "span" of the parts)."""
    from evomerge.merge.operators import ties_kernels  # numba: imported only when a CPU trim needs it

    base_np = base.detach().numpy()
    arrays = ties_kernels.as_arrays(flats)
    windows = [_bracket(arrays[i], base_np, i, k) for i, k in wanted.items()]
    chosen = tuple(arrays[w.index] for w in windows)
    lo = np.asarray([w.lo for w in windows], np.float32)
    hi = np.asarray([w.hi for w in windows], np.float32)
    above, parts, bounds = ties_kernels.gather_windows(chosen, base_np, lo, hi, windows[0].cap)
    for w, count, model_parts in zip(windows, above, parts):
        w.above = int(count)
        w.gathered = sum(part.size for part in model_parts if part is not None)
        w.parts = None if any(p is None for p in model_parts) or w.gathered > w.cap else list(model_parts)
    return windows, bounds[0][1] - bounds[0][0]


def _radix(flats: list[torch.Tensor], base: torch.Tensor, wanted: dict[int, int], chunk: int) -> dict[int, OrderStatistic]:
    """The exact k-th largest by the two-pass radix select, in spans (bounded memory whatever the ties)."""
    if not wanted:
        return {}
    n = base.numel()
    streams = {i: MagnitudeStream(base.device) for i in wanted}
    (buf,) = scratch(base, 1, chunk)
    for pass_index in range(2):
        for start, stop in spans(n, chunk):
            for i, stream in streams.items():
                magnitudes = torch.sub(flats[i][start:stop], base[start:stop], out=buf[: stop - start]).abs_()
                (stream.add_high if pass_index == 0 else stream.add_low)(magnitudes)
        if pass_index == 0:
            for i, stream in streams.items():
                stream.target(n - wanted[i] + 1)
    return {i: stream.result() for i, stream in streams.items()}
