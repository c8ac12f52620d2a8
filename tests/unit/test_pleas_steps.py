"""PLeaS steps one by one (evomerge/merge/pleas): matching, partial-merge blocks, the least-squares refit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from evomerge.merge.pleas import UnitGroups, correlation, kept_count, match_layer, match_units
from evomerge.merge.pleas.blocks import gather, initial_weight, row_blocks
from evomerge.merge.pleas.lstsq import refit_layer, refit_towards


def test_correlation_matches_numpy_corrcoef() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 3, generator=gen), torch.randn(40, 4, generator=gen)
    expected = np.corrcoef(a.numpy().T, b.numpy().T)[:3, 3:]
    np.testing.assert_allclose(correlation(a, b).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_a_constant_unit_correlates_zero_not_nan() -> None:
    a = torch.randn(10, 2)
    a[:, 1] = 0.0
    corr = correlation(a, a)
    assert torch.isfinite(corr).all() and corr[1].abs().max() == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_units=st.integers(2, 24))
def test_matching_recovers_a_known_permutation_of_rescaled_units(seed: int, n_units: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    anchor = torch.randn(64, n_units, generator=gen)
    shuffle = torch.randperm(n_units, generator=gen)
    scales = torch.rand(n_units, generator=gen) + 0.1  # correlation ignores each unit's positive scale
    other = anchor[:, shuffle] * scales
    perm, score = match_units(anchor, other)
    torch.testing.assert_close(other[:, perm] / scales[perm], anchor)
    assert torch.equal(shuffle[perm], torch.arange(n_units))
    torch.testing.assert_close(score, torch.ones(n_units, dtype=torch.float64))


@pytest.mark.parametrize(("n_units", "n_models", "ratio", "kept"), [(10, 2, 1.0, 0), (10, 2, 1.5, 5), (10, 2, 2.0, 10),
                                                                   (12, 3, 2.0, 6), (12, 3, 3.0, 12), (7, 2, 1.3, 2)])
def test_kept_count_gives_the_requested_width(n_units: int, n_models: int, ratio: float, kept: int) -> None:
    assert kept_count(n_units, n_models, ratio) == kept
    # width = merged + K·kept ≈ ratio · n, to within one group
    assert abs((n_units - kept) + n_models * kept - ratio * n_units) <= (n_models - 1) / 2 + 1e-9


@pytest.mark.parametrize("ratio", [0.99, 2.01])
def test_width_ratio_outside_1_to_k_is_a_config_error(ratio: float) -> None:
    with pytest.raises(ConfigError, match="width_ratio"):
        kept_count(8, 2, ratio)


def test_the_worst_matched_units_are_kept_apart() -> None:
    gen = torch.Generator().manual_seed(1)
    anchor = torch.randn(200, 6, generator=gen)
    other = anchor[:, [3, 1, 0, 2, 5, 4]].clone()
    other[:, 0] = torch.randn(200, generator=gen)  # other's unit 0 no longer resembles anchor unit 3
    other[:, 5] = torch.randn(200, generator=gen)  # nor its unit 5 anchor unit 4
    groups = match_layer([anchor, other], n_kept=2)
    assert groups.merged.tolist() == [[0, 2], [1, 1], [2, 3], [5, 4]]
    assert groups.kept[0].tolist() == [3, 4]
    assert groups.kept[1].tolist() == [0, 5]
    assert groups.width == 4 + 2 * 2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_models=st.integers(2, 4), n_units=st.integers(1, 12), data=st.data())
def test_each_unit_of_each_model_lands_exactly_once(seed: int, n_models: int, n_units: int, data: st.DataObject) -> None:
    n_kept = data.draw(st.integers(0, n_units))
    gen = torch.Generator().manual_seed(seed)
    groups = match_layer([torch.randn(30, n_units, generator=gen) for _ in range(n_models)], n_kept)
    for k in range(n_models):
        used = torch.cat([groups.merged[:, k], groups.kept[k]])
        assert sorted(used.tolist()) == list(range(n_units))
    assert groups.width == (n_units - n_kept) + n_models * n_kept
    assert groups.merged[:, 0].tolist() == sorted(groups.merged[:, 0].tolist())


def two_model_groups() -> tuple[UnitGroups, UnitGroups]:
    """Inputs: anchor unit 1 ↔ other's unit 0 merged, the rest kept. Outputs: 1 shared unit."""
    ins = UnitGroups(torch.tensor([[1, 0]]), (torch.tensor([0]), torch.tensor([1])))
    return ins, UnitGroups.identity(1, 2)


def test_initial_weight_follows_the_block_table_by_hand() -> None:
    ins, outs = two_model_groups()
    wa, ba = torch.tensor([[1.0, 2.0]]), torch.tensor([10.0])
    wb, bb = torch.tensor([[3.0, 4.0]]), torch.tensor([20.0])
    # merged input (a1 + b0)/2 → (2 + 3)/2; a0 kept → 1/2; b1 kept → 4/2; bias (10 + 20)/2
    assert initial_weight([wa, wb], [ba, bb], ins, outs).tolist() == [[2.5, 0.5, 2.0, 15.0]]
    # the other way round: one shared input, outputs anchor 0 ↔ other 1 merged, the rest kept
    outs2 = UnitGroups(torch.tensor([[0, 1]]), (torch.tensor([1]), torch.tensor([0])))
    wa2, wb2 = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]])
    got = initial_weight([wa2, wb2], [torch.tensor([5.0, 6.0]), torch.tensor([7.0, 8.0])], UnitGroups.identity(1, 2), outs2)
    assert got.tolist() == [[2.5, 6.5], [2.0, 6.0], [3.0, 7.0]]


def test_gather_averages_merged_units_and_copies_kept_ones() -> None:
    ins, _ = two_model_groups()
    xa, xb = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    assert gather([xa, xb], ins).tolist() == [[2.5, 1.0, 4.0]]


def test_kept_outputs_never_read_the_other_models_kept_inputs() -> None:
    ins = UnitGroups(torch.tensor([[0, 0]]), (torch.tensor([1, 2]), torch.tensor([1, 2])))  # width 1 + 2 + 2
    outs = UnitGroups(torch.tensor([[0, 1]]), (torch.tensor([1]), torch.tensor([0])))
    blocks = row_blocks(ins, outs)
    assert [b.columns.tolist() for b in blocks] == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 5], [0, 3, 4, 5]]
    assert [(b.rows.start, b.rows.stop) for b in blocks] == [(0, 1), (1, 2), (2, 3)]
    assert [b.columns.tolist() for b in row_blocks(ins, outs, with_bias=False)][1] == [0, 1, 2]


def test_refit_without_ridge_equals_numpy_lstsq() -> None:
    gen = np.random.default_rng(0)
    x, y, init = gen.normal(size=(50, 6)), gen.normal(size=(50, 3)), gen.normal(size=(3, 6))
    expected = np.linalg.lstsq(x, y, rcond=None)[0].T
    got = refit_towards(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(init), ridge=0.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-10)


def test_refit_on_rank_deficient_inputs_changes_the_start_least() -> None:
    gen = np.random.default_rng(1)
    x = gen.normal(size=(30, 5))
    x[:, 2] = 0.0  # a feature the calibration rows never use
    x[:, 4] = x[:, 0] + x[:, 1]
    y, init = gen.normal(size=(30, 2)), gen.normal(size=(2, 5))
    # minimum-norm change: init + lstsq(x, y − x·initᵀ) (numpy's lstsq is minimum-norm)
    expected = init + np.linalg.lstsq(x, y - x @ init.T, rcond=None)[0].T
    got = refit_towards(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(init), ridge=0.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(got[:, 2], init[:, 2])


def test_a_large_ridge_stays_at_the_start_and_a_small_one_moves_towards_lstsq() -> None:
    gen = np.random.default_rng(2)
    x, y, init = gen.normal(size=(40, 4)), gen.normal(size=(40, 2)), gen.normal(size=(2, 4))
    tx, ty, tw = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(init)
    np.testing.assert_allclose(refit_towards(tx, ty, tw, ridge=1e9).numpy(), init, atol=1e-6)
    lstsq = np.linalg.lstsq(x, y, rcond=None)[0].T
    errors = [np.abs(refit_towards(tx, ty, tw, ridge=r).numpy() - lstsq).max() for r in (1.0, 1e-2, 1e-4)]
    assert errors[0] > errors[1] > errors[2]


def test_refit_layer_solves_each_row_block_on_its_own_columns_only() -> None:
    ins = UnitGroups(torch.tensor([[0, 0]]), (torch.tensor([1]), torch.tensor([1])))  # columns: m, a, b, bias
    outs = UnitGroups(torch.zeros(0, 2, dtype=torch.long), (torch.tensor([0]), torch.tensor([0])))
    gen = np.random.default_rng(3)
    x = np.concatenate([gen.normal(size=(60, 3)), np.ones((60, 1))], axis=1)
    y = gen.normal(size=(60, 2))
    got = refit_layer(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(2, 4, dtype=torch.float64),
                      row_blocks(ins, outs), ridge=0.0).numpy()
    for row, cols in ((0, [0, 1, 3]), (1, [0, 2, 3])):
        expected = np.linalg.lstsq(x[:, cols], y[:, row], rcond=None)[0]
        np.testing.assert_allclose(got[row, cols], expected, rtol=1e-9, atol=1e-10)
        assert got[row, [c for c in range(4) if c not in cols]].tolist() == [0.0]
