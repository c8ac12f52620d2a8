"""The pieces of expert merging against hand-computed values: weights, alignment, grouping, SVD merges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from evomerge.moe.align import align_to, matching_permutation, permute_neurons
from evomerge.moe.combine import (
    group_weights,
    low_rank_plus_sparse,
    merge_router,
    shared_basis_merge,
    subspace_merge,
    weighted_merge,
)
from evomerge.moe.grouping import check_group_count, dominant_groups, kmeans_groups
from evomerge.moe.layout import ExpertStack
from evomerge.statistics.moe import LayerRouting


def random_stack(n: int, inter: int = 6, hidden: int = 5, seed: int = 0) -> ExpertStack:
    g = torch.Generator().manual_seed(seed)
    return ExpertStack(torch.randn(n, inter, hidden, generator=g), torch.randn(n, inter, hidden, generator=g),
                       torch.randn(n, hidden, inter, generator=g))


def swiglu(expert: ExpertStack, x: torch.Tensor) -> torch.Tensor:
    """One expert's output, written out independently of the code under test."""
    return (torch.nn.functional.silu(x @ expert.gate[0].T) * (x @ expert.up[0].T)) @ expert.down[0].T


# ----------------------------------------------------------------------------------------- weights and merges
def test_group_weights_renormalise_inside_the_group() -> None:
    np.testing.assert_allclose(group_weights(np.array([0.2, 0.1, 0.3, 0.4]), [0, 2]), [0.4, 0.6])
    np.testing.assert_allclose(group_weights(np.array([0.0, 0.5, 0.0, 0.5]), [0, 2]), [0.5, 0.5])


def test_weighted_merge_is_the_frequency_weighted_mean() -> None:
    members = ExpertStack(torch.stack([torch.full((2, 3), 1.0), torch.full((2, 3), 3.0)]),
                          torch.stack([torch.full((2, 3), -2.0), torch.full((2, 3), 2.0)]),
                          torch.stack([torch.full((3, 2), 4.0), torch.full((3, 2), 0.0)]))
    merged = weighted_merge(members, np.array([0.25, 0.75]))
    assert merged.num_experts == 1
    assert torch.allclose(merged.gate, torch.full((1, 2, 3), 2.5))
    assert torch.allclose(merged.up, torch.full((1, 2, 3), 1.0))
    assert torch.allclose(merged.down, torch.full((1, 3, 2), 1.0))


def test_merge_router_weighted_rows_and_dominant_row() -> None:
    router = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    groups = [[0, 2], [1]]
    rows = merge_router(router, groups, [np.array([0.5, 0.5]), np.array([1.0])], "weighted")
    assert torch.allclose(rows, torch.tensor([[1.5, 1.0], [0.0, 1.0]]))
    rows = merge_router(router, groups, [np.array([0.2, 0.8]), np.array([1.0])], "dominant")
    assert torch.equal(rows, torch.tensor([[2.0, 2.0], [0.0, 1.0]]))
    rows = merge_router(router, groups, [np.array([0.2, 0.8]), np.array([1.0])], "dominant", dominant=[0, 1])
    assert torch.equal(rows[0], router[0])


# ------------------------------------------------------------------------------------------------ alignment
def test_permuting_neurons_keeps_the_function() -> None:
    expert = random_stack(1)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    moved = permute_neurons(expert, np.array([3, 0, 5, 1, 4, 2]))
    assert not torch.equal(moved.gate, expert.gate)
    assert torch.allclose(swiglu(moved, x), swiglu(expert, x), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(6))), st.integers(0, 1000))
def test_alignment_recovers_a_permuted_copy(perm: list[int], seed: int) -> None:
    reference = random_stack(1, seed=seed)
    copy = permute_neurons(reference, np.array(perm))
    found = matching_permutation(reference, copy)
    assert np.array_equal(np.array(perm)[found], np.arange(6))
    aligned = align_to(reference, copy)
    for p in ("gate", "up", "down"):
        assert torch.equal(getattr(aligned, p), getattr(reference, p))


# ------------------------------------------------------------------------------------------- shared-U SVD merge
@pytest.mark.parametrize("rank", [None, 3])
def test_shared_basis_merge_of_identical_experts_gives_the_expert(rank: int | None) -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 5, generator=g, dtype=torch.float64)
    merged = shared_basis_merge(torch.stack([w, w, w]), np.array([0.2, 0.3, 0.5]), rank)
    assert torch.allclose(merged, w, atol=1e-10)


def test_shared_basis_merge_at_full_rank_is_the_weighted_average() -> None:
    mats = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = np.array([0.5, 0.3, 0.2])
    expected = 0.5 * mats[0] + 0.3 * mats[1] + 0.2 * mats[2]
    assert torch.allclose(shared_basis_merge(mats, w, None), expected, atol=1e-10)


def test_shared_basis_merge_of_one_expert_is_its_best_rank_r_approximation() -> None:
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    assert torch.allclose(shared_basis_merge(w.unsqueeze(0), np.array([1.0]), 2), best, atol=1e-10)


def test_subspace_merge_keeps_an_identical_cluster() -> None:
    one = random_stack(1, seed=5)
    cluster = ExpertStack.stack([one, one, one, one])
    merged = subspace_merge(cluster, np.full(4, 0.25), None)
    for p in ("gate", "up", "down"):
        assert torch.allclose(getattr(merged, p), getattr(one, p), atol=1e-5)


def test_low_rank_plus_sparse_by_hand() -> None:
    w = torch.diag(torch.tensor([3.0, 1.0]))
    assert torch.allclose(low_rank_plus_sparse(w, 1, 0.0), torch.diag(torch.tensor([3.0, 0.0])), atol=1e-6)
    assert torch.allclose(low_rank_plus_sparse(w, 1, 0.25), w, atol=1e-6)
    dense = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(low_rank_plus_sparse(dense, 1, 1.0), dense, atol=1e-5)


# ------------------------------------------------------------------------------------------------- grouping
def test_dominant_groups_by_hand() -> None:
    freq = np.array([0.1, 0.4, 0.3, 0.2])
    sim = np.array([[1.0, 0.2, 0.9, 0.1],
                    [0.2, 1.0, 0.3, 0.8],
                    [0.9, 0.3, 1.0, 0.4],
                    [0.1, 0.8, 0.4, 1.0]])
    groups, leaders = dominant_groups(freq, sim, 2)
    assert leaders == [1, 2]
    assert groups == [[1, 3], [0, 2]]


def test_dominant_groups_ties_prefer_the_lower_index() -> None:
    groups, leaders = dominant_groups(np.full(4, 0.25), np.ones((4, 4)), 2)
    assert leaders == [0, 1]
    assert groups == [[0, 2, 3], [1]]


def test_kmeans_separates_two_blobs() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.1], [5.1, 5.0]])
    assert kmeans_groups(x, 2, np.random.default_rng(0)) == [[0, 1, 3], [2, 4]]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 10_000), st.booleans())
def test_kmeans_always_partitions_into_non_empty_groups(n: int, k: int, seed: int, identical: bool) -> None:
    k = min(k, n)
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3)) if identical else rng.normal(size=(n, 3))
    groups = kmeans_groups(x, k, rng, restarts=2)
    assert len(groups) == k and all(groups)
    assert sorted(e for g in groups for e in g) == list(range(n))


@pytest.mark.parametrize("bad", [0, 9, 2.5, True, "4"])
def test_group_counts_that_do_not_divide(bad: object) -> None:
    assert check_group_count(3, 8, "mc_smoe") == 3
    with pytest.raises(ConfigError, match=r"parameters.num_experts: cannot split 8 experts"):
        check_group_count(bad, 8, "mc_smoe")


def test_logit_similarity_is_the_mapped_cosine_of_logit_columns() -> None:
    logits = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 1.0], [2.0, 0.0, 0.5]], dtype=torch.float64)
    routing = LayerRouting(torch.full((3,), 1 / 3), logits.T @ logits, torch.eye(3), 3)
    cos01 = torch.nn.functional.cosine_similarity(logits[:, 0], logits[:, 1], dim=0)
    sim = routing.logit_similarity()
    assert torch.isclose(sim[0, 1], (cos01 + 1) / 2)
    assert torch.allclose(sim.diagonal(), torch.ones(3, dtype=torch.float64))
