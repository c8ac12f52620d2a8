"""Exact order statistics by radix select (evomerge/merge/operators/selection.py) against sorting."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from evomerge.merge.operators.selection import MagnitudeRanks, rank_window_mask


def stable_window(values: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Reference: the entries of ascending stable-sort rank in [start, stop)."""
    order = torch.sort(values.reshape(-1), stable=True).indices
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[order[max(0, start) : max(0, stop)]] = True
    return mask.view(values.shape)


magnitudes = st.lists(
    st.sampled_from([0.0, 1e-30, 0.5, 0.75, 1.0, 2.0, 3.5, 1e20]) | st.floats(0, 1e6, width=32),
    min_size=1,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(values=magnitudes, data=st.data())
def test_window_mask_matches_stable_sort_even_with_ties(values: list[float], data: st.DataObject) -> None:
    tensor = torch.tensor(values, dtype=torch.float32)
    n = tensor.numel()
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    mask = rank_window_mask(tensor, start, stop)
    assert torch.equal(mask, stable_window(tensor, start, stop))
    assert int(mask.sum()) == stop - start


@settings(max_examples=100, deadline=None)
@given(values=magnitudes, data=st.data())
def test_kth_smallest_equals_kthvalue_with_counts(values: list[float], data: st.DataObject) -> None:
    tensor = torch.tensor(values, dtype=torch.float32)
    k = data.draw(st.integers(1, tensor.numel()))
    stat = MagnitudeRanks(tensor).kth_smallest(k)
    assert stat.value == float(torch.kthvalue(tensor, k).values)
    assert stat.n_less == int((tensor < stat.value).sum())
    assert stat.n_equal == int((tensor == stat.value).sum())


def test_large_tensor_window_keeps_exact_count_and_shape() -> None:
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(300, 201, generator=gen).abs()
    n = values.numel()
    mask = rank_window_mask(values, n // 10, n - n // 100)
    assert mask.shape == values.shape
    assert torch.equal(mask, stable_window(values, n // 10, n - n // 100))


def test_bf16_like_values_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.integers(0, 7, size=5000).astype(np.float32) * 0.125)
    for start, stop in [(0, 1234), (1000, 5000), (2500, 2600), (4999, 5000)]:
        assert torch.equal(rank_window_mask(values, start, stop), stable_window(values, start, stop))


def test_kth_outside_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        MagnitudeRanks(torch.ones(3)).kth_smallest(4)


def test_wider_dtypes_are_ranked_at_float32() -> None:
    values = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    assert rank_window_mask(values, 1, 3).tolist() == [True, False, True]
