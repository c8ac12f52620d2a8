"""Exact order statistics of magnitudes without sorting: a radix select over float32 bit patterns.

For non-negative float32 values the int32 bit pattern orders exactly like the value, so a histogram of the
top 16 bits finds the bucket that holds the k-th smallest value and a histogram of the low 16 bits inside
that bucket pins it down exactly: two ``bincount`` passes instead of an O(n log n) sort, and about twice as
fast as ``torch.kthvalue`` on CPU. The same two levels accumulated over spans (``MagnitudeStream``) select
the k-th value of a stream in bounded memory: TIES's per-tensor trim in cache-sized spans (``ties_stream.py``)
and its whole-model threshold over every tensor (``global_trim.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HIGH_BINS = 1 << 15
"""Buckets of the top 16 bits; the sign bit of a magnitude is 0, so 15 bits vary."""
LOW_BINS = 1 << 16
PENDING_LIMIT = 1 << 20
"""Bucket members a stream buffers before folding them into its low-bits histogram (bounds its memory)."""


def magnitude_bits(magnitudes: torch.Tensor) -> torch.Tensor:
    """Flat int32 bit patterns of non-negative values (float32; wider types are ranked at float32)."""
    return magnitudes.to(torch.float32).reshape(-1).view(torch.int32)


def locate(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin that holds the k-th smallest value (1-based) and how many values lie in lower bins."""
    cumulative = histogram.cumsum(0)
    index = int(torch.searchsorted(cumulative, torch.tensor([k], device=cumulative.device))[0])
    below = int(cumulative[index - 1]) if index > 0 else 0
    return index, below


def compose(high: int, low: int) -> float:
    """The float32 value whose bit pattern is ``high << 16 | low``."""
    return float(torch.tensor([(high << 16) | low], dtype=torch.int32).view(torch.float32)[0])


def low_histogram(bits: torch.Tensor, high_bits: torch.Tensor, high: int) -> torch.Tensor:
    """Histogram of the low 16 bits of the values whose top bits equal ``high``."""
    return torch.bincount(bits[high_bits == high] & 0xFFFF, minlength=LOW_BINS)


@dataclass(frozen=True)
class OrderStatistic:
    value: float
    n_less: int
    """How many values are strictly smaller."""
    n_equal: int


class MagnitudeRanks:
    """Order statistics of one tensor of magnitudes; the top-bit histogram is shared between queries."""

    def __init__(self, magnitudes: torch.Tensor) -> None:
        self.bits = magnitude_bits(magnitudes)
        self.high_bits = self.bits >> 16
        self.high_histogram = torch.bincount(self.high_bits, minlength=HIGH_BINS)

    def kth_smallest(self, k: int) -> OrderStatistic:
        if not 1 <= k <= self.bits.numel():
            raise ValueError(f"k={k} outside 1..{self.bits.numel()}")
        high, below = locate(self.high_histogram, k)
        lows = low_histogram(self.bits, self.high_bits, high)
        low, below_low = locate(lows, k - below)
        return OrderStatistic(compose(high, low), below + below_low, int(lows[low]))


class MagnitudeStream:
    """The exact k-th smallest of non-negative values that arrive in spans, in two passes and O(2^16) memory.

    Pass 0 (``add_high``, every value once) histograms the top 16 bits; ``target(k)`` finds the bucket that
    holds the k-th smallest; pass 1 (``add_low``, the same values again) histograms the low 16 bits of that
    bucket's members; ``result()`` composes the exact value with its counts. Values are ranked at float32.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.high = torch.zeros(HIGH_BINS, dtype=torch.int64, device=device)
        self.low = torch.zeros(LOW_BINS, dtype=torch.int64, device=device)
        self.count = 0
        self.rank = self.bucket = self.below = 0
        self._pending: list[torch.Tensor] = []
        self._pending_count = 0
        self._top = torch.empty(0, dtype=torch.int32, device=device)
        self._member = torch.empty(0, dtype=torch.bool, device=device)

    def _bits(self, magnitudes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bit patterns, their top 16 bits in a reused buffer) of a span."""
        bits = magnitude_bits(magnitudes)
        n = bits.numel()
        if self.high.device != bits.device:  # the stream follows its data (a GPU executor's, say) ...
            self._fold()  # ... and a model sharded over devices hands it spans from each in turn
            self.high, self.low = self.high.to(bits.device), self.low.to(bits.device)
        if self._top.numel() < n or self._top.device != bits.device:
            self._top = torch.empty(n, dtype=torch.int32, device=bits.device)
            self._member = torch.empty(n, dtype=torch.bool, device=bits.device)
        return bits, torch.bitwise_right_shift(bits, 16, out=self._top[:n])

    def add_high(self, magnitudes: torch.Tensor) -> None:
        _, top = self._bits(magnitudes)
        self.high.add_(torch.bincount(top, minlength=HIGH_BINS))
        self.count += top.numel()

    def target(self, k: int) -> None:
        """Select the k-th smallest (1-based) of the values of pass 0."""
        if not 1 <= k <= self.count:
            raise ValueError(f"k={k} outside 1..{self.count}")
        self.rank = k
        self.bucket, self.below = locate(self.high, k)

    def add_low(self, magnitudes: torch.Tensor) -> None:
        bits, top = self._bits(magnitudes)
        members = bits[torch.eq(top, self.bucket, out=self._member[: top.numel()])]
        if members.numel():
            self._pending.append(members)
            self._pending_count += members.numel()
            if self._pending_count >= PENDING_LIMIT:
                self._fold()

    def _fold(self) -> None:
        if self._pending:
            self.low.add_(torch.bincount(torch.cat(self._pending) & 0xFFFF, minlength=LOW_BINS))
        self._pending, self._pending_count = [], 0

    def result(self) -> OrderStatistic:
        self._fold()
        low, below_low = locate(self.low, self.rank - self.below)
        return OrderStatistic(compose(self.bucket, low), self.below + below_low, int(self.low[low]))


def rank_window_mask(magnitudes: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Mask of the entries whose ascending rank lies in ``[start, stop)``.

    Equal values are ranked by position, so exactly ``stop - start`` entries are selected (mergekit's
    sort-based selections break such ties arbitrarily). ``start = n - k, stop = n`` keeps the k largest.
    """
    values = magnitudes.to(torch.float32).reshape(-1)
    n = values.numel()
    start, stop = max(0, start), min(n, stop)
    if stop <= start:
        return torch.zeros(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    if start == 0 and stop == n:
        return torch.ones(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    ranks = MagnitudeRanks(values)
    mask: torch.Tensor | None = None
    if start > 0:
        low = ranks.kth_smallest(start + 1)
        below_window = start - low.n_less  # entries equal to low.value that rank below the window
        mask = (
            values >= low.value
            if below_window == 0
            else _with_ties(values > low.value, values, low.value, below_window, None)
        )
    if stop < n:
        high = ranks.kth_smallest(stop)
        inside = stop - high.n_less  # entries equal to high.value that still fit in the window
        upper = (
            values <= high.value
            if inside == high.n_equal
            else _with_ties(values < high.value, values, high.value, 0, inside)
        )
        mask = upper if mask is None else mask.logical_and_(upper)
    assert mask is not None
    return mask.view(magnitudes.shape)


def _with_ties(
    mask: torch.Tensor, values: torch.Tensor, value: float, first: int, last: int | None
) -> torch.Tensor:
    """Add to ``mask`` the entries equal to ``value`` whose position among those ties is in [first, last)."""
    tied = (values == value).nonzero().squeeze(1)
    mask[tied[first:last]] = True
    return mask
