"""TIES's two passes over a CPU float32 weight as compiled loops (numba), one slice of the weight per core.

``ties_stream.py`` walks a weight in cache-sized spans with about twenty tensor ops per span; on a CPU each
op pays interpreter and dispatch overhead and makes its own trip through the cache, so the merge is
compute-bound at several times the cost of reading the inputs. Here each pass is one loop that touches
every entry once: the selection pass (the window gather of ``trim_rules.py``: count the magnitudes above
the window, gather those inside) and the merge pass (trim, weight, elect, agreeing sum and divisor,
``addcdiv``), with the same float32 operations in the same order as ``ties_stream``'s, so both paths give
the same numbers. The loops release the GIL, so a weight is cut into one contiguous slice per intra-op
thread and the slices run on a thread pool at once.

Compiled on first use and cached on disk by numba (``cache=True``), so only the first merge after an
install (and the first with a new number of models, each a specialization) pays the compilation; every
process still pays about 0.7 s once to import numba and load the cached kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numba
import numpy as np
import torch

T = TypeVar("T")
ALIGN = 1 << 12
"""Slice boundaries fall on multiples of this many entries (whole pages of float32)."""
THREADS: int | None = None
"""Slices per weight; None: ``torch.get_num_threads()`` (the intra-op threads the user allowed)."""


BLOCK = 1 << 10
"""Entries per block of the gather: magnitudes go through an L1-sized buffer between its two loops."""


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _gather_window(xs, base, lo, hi, start, stop, gathered, counts):  # type: ignore[no-untyped-def]
    """Per model k: count |x_k − base| > hi[k] into counts[k, 0] and copy those in [lo[k], hi[k]] into
    gathered[k] (counts[k, 1] of them; the count keeps growing once the buffer is full, which marks an
    overflow). ``gathered`` has a spare column.

    Per block, one branch-free (vectorized) loop computes the magnitudes, counts those above and flags the
    window's members; a second loop packs the members (each value is stored at the next free slot, which
    only a member advances), run only for blocks that have any."""
    cap = gathered.shape[1] - 1
    magnitudes = np.empty(BLOCK, np.float32)
    flags = np.empty(BLOCK, np.uint8)
    b = base[start:stop]
    for k in range(len(xs)):
        x = xs[k][start:stop]
        low, high = lo[k], hi[k]
        above = 0
        inside = 0
        for block in range(0, x.shape[0], BLOCK):
            size = min(BLOCK, x.shape[0] - block)
            xb, bb = x[block : block + size], b[block : block + size]
            members = 0
            for j in range(size):
                m = abs(xb[j] - bb[j])
                magnitudes[j] = m
                above += m > high
                flag = (m >= low) & (m <= high)
                flags[j] = flag
                members += flag
            if members and inside + members <= cap:
                packed = gathered[k, inside : inside + members + 1]
                slot = 0
                for j in range(size):
                    packed[slot] = magnitudes[j]
                    slot += flags[j]
            inside += members
        counts[k, 0] = above
        counts[k, 1] = inside


@numba.njit(error_model="numpy")  # LLVM inlines it (numba's inline="always" stops the loop vectorizing when cached)
def _trimmed(xs, k, i, b, weights, thresholds, dropped):  # type: ignore[no-untyped-def]
    """w_k τ̂_k at entry i: θ_k − θ0, zeroed below the trim threshold (or when ``dropped``), weighted."""
    d = xs[k][i] - b
    t = thresholds[k]
    d = np.float32(0.0) if ((t > 0) & (abs(d) < t)) | dropped else d
    return d * weights[k] if weights[k] != np.float32(1.0) else d


@numba.njit(error_model="numpy")  # LLVM inlines it (numba's inline="always" stops the loop vectorizing when cached)
def _entry(xs, base, i, weights, thresholds, dropped, zero_positive, normalize, scale, min_weight, positive):  # type: ignore[no-untyped-def]
    """TIES at entry i, with ``ties_stream._SpanMerger.merge``'s float32 operations in its order; ``dropped[k]``
    marks model k's entry as a tie its trim drops. Returns (merged value, sign of the election, 1 if the
    election cancelled exactly with agreeing models)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    b = base[i]
    elect = _trimmed(xs, 0, i, b, weights, thresholds, dropped[0])
    for k in range(1, len(xs)):
        elect = elect + _trimmed(xs, k, i, b, weights, thresholds, dropped[k])
    gamma = np.float32(math.copysign(1.0, elect)) if zero_positive else (one if elect > zero else -one)
    total = _trimmed(xs, 0, i, b, weights, thresholds, dropped[0]) * gamma
    total = zero if total < zero else total
    divisor = one if total > zero else zero
    divisor = divisor * weights[0] if weights[0] != one else divisor
    for k in range(1, len(xs)):
        part = _trimmed(xs, k, i, b, weights, thresholds, dropped[k]) * gamma
        part = zero if part < zero else part
        total = total + part
        divisor = divisor + weights[k] * (one if part > zero else zero)
    if normalize:
        if positive:  # every weight > 0: no agreeing model ⇔ divisor 0, and any positive floor gives 0
            divisor = min_weight if divisor < min_weight else divisor
        else:
            divisor = one if divisor == zero else divisor
        divisor = divisor * gamma
    else:
        divisor = gamma
    sign = (elect > zero) * 1 - (elect < zero) * 1
    cancelled = (elect == zero) & (total > zero)
    return b + scale * total / divisor, sign, cancelled * 1


@numba.njit(nogil=True, cache=True, error_model="numpy")  # numpy's: no zero-division check, so it vectorizes
def _merge_slice(  # type: ignore[no-untyped-def]
    xs, base, weights, thresholds, drops, dropped, zero_positive, normalize, scale, min_weight, positive,
    out, start, stop,
):
    """TIES on entries [start, stop) into ``out``; returns (Σ sign(election), entries whose election
    cancelled exactly with agreeing models). The loop ignores the tied entries a trim drops by position
    (a handful per weight, so the loop stays branch-free); those entries are merged again afterwards."""
    balance = 0
    cancelled = 0
    kept = np.zeros(len(xs), np.bool_)
    for i in range(np.uintp(start), np.uintp(stop)):  # unsigned: no negative-index wraparound, so it vectorizes
        value, sign, cancel = _entry(
            xs, base, i, weights, thresholds, kept, zero_positive, normalize, scale, min_weight, positive
        )
        out[i] = value
        balance += sign
        cancelled += cancel
    for j in range(drops.shape[0]):
        i = drops[j]
        _, old_sign, old_cancel = _entry(
            xs, base, i, weights, thresholds, kept, zero_positive, normalize, scale, min_weight, positive
        )
        value, sign, cancel = _entry(
            xs, base, i, weights, thresholds, dropped[j], zero_positive, normalize, scale, min_weight, positive
        )
        out[i] = value
        balance += sign - old_sign
        cancelled += cancel - old_cancel
    return balance, cancelled


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evomerge-ties")


def slices(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` slices covering ``range(n)``, one per intra-op thread (fewer for small weights)."""
    parts = max(1, min(parts or THREADS or torch.get_num_threads(), -(-n // ALIGN)))
    size = max(1, -(-n // parts))
    size += -size % ALIGN
    return [(s, min(n, s + size)) for s in range(0, n, size)] or [(0, 0)]


def run_slices(job: Callable[[int, int], T], bounds: list[tuple[int, int]]) -> list[T]:
    """``job(start, stop)`` for every slice, on the pool when there are several."""
    if len(bounds) == 1:
        return [job(*bounds[0])]
    return list(_pool(len(bounds)).map(lambda b: job(*b), bounds))


def as_arrays(tensors: Sequence[torch.Tensor]) -> tuple[np.ndarray, ...]:
    """Flat numpy views (no copy) of contiguous CPU float32 tensors, as the homogeneous tuple numba wants."""
    return tuple(np.ascontiguousarray(t.detach().reshape(-1).numpy()) for t in tensors)


def gather_windows(
    xs: tuple[np.ndarray, ...], base: np.ndarray, lo: np.ndarray, hi: np.ndarray, cap: int
) -> tuple[np.ndarray, list[list[np.ndarray]], list[tuple[int, int]]]:
    """Per model: magnitudes above its window (summed over slices) and, per slice, those inside it (None
    marks a slice whose buffer overflowed). Also returns the slices."""
    bounds = slices(base.size)

    def job(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        gathered = np.empty((len(xs), min(cap, stop - start) + 1), np.float32)
        counts = np.zeros((len(xs), 2), np.int64)
        _gather_window(xs, base, lo, hi, start, stop, gathered, counts)
        return gathered, counts

    results = run_slices(job, bounds)
    above = sum(counts[:, 0] for _, counts in results)
    parts: list[list[Any]] = [
        [g[k, : c[k, 1]] if c[k, 1] < g.shape[1] else None for g, c in results] for k in range(len(xs))
    ]
    return np.asarray(above), parts, bounds


def merge(
    xs: tuple[np.ndarray, ...],
    base: np.ndarray,
    weights: list[float],
    thresholds: list[float],
    drops: list[np.ndarray],
    *,
    zero_sign: str,
    normalize: bool,
    scale: float,
    out: np.ndarray,
) -> None:
    """TIES into ``out`` (see ``ties_stream.ties_stream``; ``zero_sign = majority`` merges with + first and
    again with − when the weight's elections lean negative and some cancelled exactly). ``drops[k]``: the
    positions of model k's tied entries that its trim drops."""
    w = np.asarray(weights, np.float32)
    t = np.asarray(thresholds, np.float32)
    positions, dropped = _drop_table(drops)
    bounds = slices(base.size)

    def run(zero_positive: bool) -> list[tuple[int, int]]:
        def job(start: int, stop: int) -> tuple[int, int]:
            first, last = np.searchsorted(positions, [start, stop])
            return _merge_slice(
                xs, base, w, t, positions[first:last], dropped[first:last], zero_positive, normalize,
                np.float32(scale), np.float32(min(weights)), min(weights) > 0, out, start, stop,
            )

        return run_slices(job, bounds)

    results = run(True)
    if zero_sign == "majority" and sum(b for b, _ in results) < 0 and any(c for _, c in results):
        run(False)


def _drop_table(drops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The positions any model drops (sorted, unique) and, per position and model, whether that model does."""
    positions = np.unique(np.concatenate([np.asarray(d, np.int64) for d in drops] + [np.empty(0, np.int64)]))
    dropped = np.zeros((positions.size, len(drops)), np.bool_)
    for k, d in enumerate(drops):
        dropped[np.searchsorted(positions, np.asarray(d, np.int64)), k] = True
    return positions, dropped
