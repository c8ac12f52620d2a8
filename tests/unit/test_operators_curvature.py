"""OTA and Fast Fisher Grafting (curvature-aware operators on Adam second moments) against closed forms,
and through statistics folders and the merge engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError, StatisticsError
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.operator import MergeInputs, get_operator
from evomerge.merge.operators.ota import curvature_weight, ota_merge
from evomerge.merge.params import ResolvedParams
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.plan import MergePlan
from evomerge.statistics.optimizer_state import optimizer_second_moments
from evomerge.statistics.second_moments import (
    rank1_approximation,
    write_second_moments,
)

Tensors = dict[str, torch.Tensor]


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def moments_like(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * scale + 1e-3


def run_plan(plan: dict[str, Any], sources: dict[str, Tensors]) -> Tensors:
    infos = {r: SourceInfo(r, {n: tuple(t.shape) for n, t in sd.items()}, {}) for r, sd in sources.items()}
    compiled = compile_plan(MergePlan.from_dict(plan), infos)
    executor = MergeExecutor(compiled, lambda i, n: sources[compiled.sources[i]][n])
    return {task.out_name: executor.run(task).clone() for task in compiled.tasks}


def models_with_moments(tmp_path: Path, moments: list[Tensors], **params: object) -> list[dict[str, Any]]:
    entries = []
    for i, m in enumerate(moments):
        folder = write_second_moments(m, tmp_path / f"v{i}")
        entries.append({"model": f"m{i}", "parameters": {"statistics": str(folder.path), **params}})
    return entries


# ------------------------------------------------------------------ OTA closed forms
@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 4),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.sampled_from(["none", "global"]),
    st.booleans(),
    st.integers(0, 10_000),
)
def test_ota_with_equal_second_moments_is_the_plain_average(
    k: int, power: float, normalise: str, with_base: bool, seed: int
) -> None:
    tensors = [randn(3, 5, seed=seed + i) for i in range(k)]
    base = randn(3, 5, seed=seed - 1) if with_base else None
    shared = moments_like(3, 5, seed=seed + 99)
    weights = [curvature_weight(shared, power, 1e-26, 1.0, normalise) for _ in tensors]
    torch.testing.assert_close(ota_merge(tensors, base, weights), torch.stack(tensors).mean(0))


def test_ota_weights_each_entry_by_the_square_root_of_its_second_moments() -> None:
    base = torch.tensor([0.0, 1.0, 2.0])
    tensors = [torch.tensor([1.0, 1.0, 4.0]), torch.tensor([3.0, 2.0, 2.0])]
    moments = [torch.tensor([4.0, 1.0, 9.0]), torch.tensor([1.0, 1.0, 1.0])]
    weights = [curvature_weight(v, 0.5, 0.0) for v in moments]  # √v: [2, 1, 3] and [1, 1, 1]
    expected = base + torch.tensor([(2 * 1 + 1 * 3) / 3, (0 + 1) / 2, (3 * 2 + 0) / 4])
    torch.testing.assert_close(ota_merge(tensors, base, weights), expected)


def test_ota_returns_the_model_whose_curvature_dominates() -> None:
    tensors = [randn(4, 2, seed=i) for i in range(3)]
    moments = [torch.full((4, 2), 1e-12) for _ in range(3)]
    moments[2] = torch.full((4, 2), 1.0)
    weights = [curvature_weight(v, 0.5, 1e-26) for v in moments]
    torch.testing.assert_close(
        ota_merge(tensors, randn(4, 2, seed=9), weights), tensors[2], rtol=1e-5, atol=1e-5
    )


def test_entries_every_mask_drops_take_the_fallback() -> None:
    base = torch.zeros(4)
    tensors = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([3.0, 4.0, 5.0, 6.0])]
    masks: list[torch.Tensor | None] = [
        torch.tensor([True, True, False, False]),
        torch.tensor([True, False, False, True]),
    ]
    ones = [torch.ones(4), torch.ones(4)]
    torch.testing.assert_close(ota_merge(tensors, base, ones, masks), torch.tensor([2.0, 2.0, 0.0, 6.0]))
    torch.testing.assert_close(
        ota_merge(tensors, base, ones, masks, fallback="mean"), torch.tensor([2.0, 2.0, 4.0, 6.0])
    )
    # linear: the plain mean of the masked task vectors
    torch.testing.assert_close(
        ota_merge(tensors, base, ones, masks, aggregate="linear"), torch.tensor([2.0, 1.0, 0.0, 3.0])
    )


# ------------------------------------------------------------------ FFG
def ffg_inputs(
    tmp_path: Path, density: float, scope: str = "tensor"
) -> tuple[MergeInputs, ResolvedParams, torch.Tensor]:
    base, theta = randn(6, 5, seed=1), randn(6, 5, seed=2)
    moment = moments_like(6, 5, seed=3)
    folder = write_second_moments({"w": moment}, tmp_path / f"v{density}-{scope}")
    params = ResolvedParams(
        {"density_scope": scope},
        {"density": [density], "statistics": [str(folder.path)], "rank1_approx": [False]},
    )
    return MergeInputs([theta], base, "w"), params, moment


def test_ffg_density_one_is_the_fine_tune_and_zero_the_base(tmp_path: Path) -> None:
    ffg = get_operator("ffg").fn
    inputs, params, _ = ffg_inputs(tmp_path, 1.0)
    assert torch.equal(ffg(inputs, params), inputs.tensors[0])
    inputs, params, _ = ffg_inputs(tmp_path, 0.0)
    assert inputs.base is not None and torch.equal(ffg(inputs, params), inputs.base)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_ffg_keeps_the_entries_of_largest_saliency(tmp_path: Path, density: float) -> None:
    inputs, params, moment = ffg_inputs(tmp_path, density)
    assert inputs.base is not None
    theta, base = inputs.tensors[0], inputs.base
    saliency = (moment * (theta - base) ** 2).reshape(-1)
    keep = torch.zeros(30, dtype=torch.bool)
    keep[saliency.topk(int(density * 30)).indices] = True
    expected = torch.where(keep.view(6, 5), theta, base)
    assert torch.equal(get_operator("ffg").fn(inputs, params), expected)


def test_ffg_model_density_thresholds_the_whole_model(tmp_path: Path) -> None:
    """The loud tensor (large curvature) keeps all its entries at model scope, a quarter at tensor scope."""
    base = {"loud": torch.zeros(8, 4), "quiet": torch.zeros(8, 4)}
    fine = {"loud": randn(8, 4, seed=5), "quiet": randn(8, 4, seed=6)}
    moments = {"loud": moments_like(8, 4, seed=7, scale=1e6) + 1e3, "quiet": moments_like(8, 4, seed=8)}
    models = models_with_moments(tmp_path, [moments], density=0.5)
    results = {}
    for scope in ("model", "tensor"):
        plan = {
            "merge_method": "ffg",
            "base_model": "base",
            "models": models,
            "parameters": {"density_scope": scope},
        }
        results[scope] = run_plan(plan, {"base": base, "m0": fine})
    kept = {scope: {n: int((r[n] != 0).sum()) for n in r} for scope, r in results.items()}
    assert kept["model"] == {"loud": 32, "quiet": 0}
    assert kept["tensor"] == {"loud": 16, "quiet": 16}
    scores = torch.cat([(moments[n] * fine[n] ** 2).reshape(-1) for n in ("loud", "quiet")])
    assert int((scores >= scores.kthvalue(33).values).sum()) == 32  # an independent whole-model rank


# ------------------------------------------------------------------ through folders and the engine
def test_ota_reads_each_models_folder_and_masks_by_saliency(tmp_path: Path) -> None:
    base = {"w": randn(5, 4, seed=0), "b": randn(5, seed=1)}
    fine = [
        {n: t + 0.1 * randn(*t.shape, seed=10 * i + j) for j, (n, t) in enumerate(base.items())}
        for i in range(2)
    ]
    moments = [
        {n: moments_like(*t.shape, seed=20 + 10 * i + j) for j, (n, t) in enumerate(base.items())}
        for i in range(2)
    ]
    sources = {"base": base, "m0": fine[0], "m1": fine[1]}
    plan = {
        "merge_method": "ota",
        "base_model": "base",
        "models": models_with_moments(tmp_path, moments, density=0.6),
        "parameters": {"density_scope": "tensor", "epsilon": 1e-8},
    }
    before = {r: {n: t.clone() for n, t in sd.items()} for r, sd in sources.items()}
    out = run_plan(plan, sources)
    assert all(
        torch.equal(sources[r][n], t) for r, sd in before.items() for n, t in sd.items()
    )  # inputs untouched
    for name in base:
        weights = [curvature_weight(m[name], 0.5, 1e-8) for m in moments]
        masks: list[torch.Tensor | None] = []
        for f, m in zip(fine, moments):
            s = (m[name] * (f[name] - base[name]) ** 2).reshape(-1)
            keep = torch.zeros_like(s, dtype=torch.bool)
            keep[s.topk(int(0.6 * s.numel())).indices] = True
            masks.append(keep.view(base[name].shape))
        expected = ota_merge([f[name] for f in fine], base[name], weights, masks)
        torch.testing.assert_close(out[name], expected)


def test_rank1_second_moments_are_much_smaller_and_merge_almost_alike(tmp_path: Path) -> None:
    """Near-rank-1 curvature (as Adam's typically is per matrix): the compressed folder stores m + n numbers per
    matrix, and its merge sits far closer to the full-curvature merge than the plain average does."""
    m, n, k = 48, 32, 3
    base = {"w": randn(m, n, seed=0)}
    fine = [{"w": base["w"] + 0.1 * randn(m, n, seed=1 + i)} for i in range(k)]
    rows = [moments_like(m, seed=10 + i, scale=10.0) for i in range(k)]
    cols = [moments_like(n, seed=20 + i, scale=10.0) for i in range(k)]
    moments = [
        {"w": torch.outer(r, c) * torch.exp(0.1 * randn(m, n, seed=30 + i))}
        for i, (r, c) in enumerate(zip(rows, cols))
    ]
    full = [write_second_moments(v, tmp_path / f"full{i}") for i, v in enumerate(moments)]
    small = [
        write_second_moments(v, tmp_path / f"small{i}", compression="rank1") for i, v in enumerate(moments)
    ]
    assert sum(f.stored_numel() for f in small) * 10 < sum(f.stored_numel() for f in full)
    sources = {"base": base, **{f"m{i}": f for i, f in enumerate(fine)}}
    merged = {}
    for label, folders, rank1 in (("full", full, False), ("small", small, False), ("on_the_fly", full, True)):
        models = [
            {"model": f"m{i}", "parameters": {"statistics": str(f.path), "rank1_approx": rank1}}
            for i, f in enumerate(folders)
        ]
        merged[label] = run_plan({"merge_method": "ota", "base_model": "base", "models": models}, sources)[
            "w"
        ]
    average = torch.stack([f["w"] for f in fine]).mean(0)
    error, spread = (merged["small"] - merged["full"]).norm(), (average - merged["full"]).norm()
    assert error < 0.2 * spread
    torch.testing.assert_close(
        merged["small"], merged["on_the_fly"]
    )  # stored factors = the paper's on-the-fly v̂
    expected = ota_merge(
        [f["w"] for f in fine],
        base["w"],
        [curvature_weight(rank1_approximation(v["w"]), 0.5, 1e-26) for v in moments],
    )
    torch.testing.assert_close(merged["small"], expected)


def test_ota_end_to_end_from_adam_training(tmp_path: Path) -> None:
    """optimizer.pt of two short Adam runs from one base → second-moment folders → ota."""
    torch.manual_seed(0)
    base_model = torch.nn.Linear(3, 2)
    sources, models = {"base": {k: v.clone() for k, v in base_model.state_dict().items()}}, []
    for i in range(2):
        model = torch.nn.Linear(3, 2)
        model.load_state_dict(base_model.state_dict())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        gen = torch.Generator().manual_seed(i)
        for _ in range(3):
            x = torch.randn(16, 3, generator=gen) * (i + 1)
            loss = (model(x) - x[:, :2] * (i - 0.5)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save(optimizer.state_dict(), tmp_path / f"opt{i}.pt")
        folder = write_second_moments(
            optimizer_second_moments(tmp_path / f"opt{i}.pt", model), tmp_path / f"v{i}"
        )
        sources[f"m{i}"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        models.append({"model": f"m{i}", "parameters": {"statistics": str(folder.path)}})
        assert torch.equal(folder.second_moment("weight"), optimizer.state[model.weight]["exp_avg_sq"])
    out = run_plan({"merge_method": "ota", "base_model": "base", "models": models}, sources)
    for name in ("weight", "bias"):
        weights = [
            curvature_weight(
                optimizer_second_moments(tmp_path / f"opt{i}.pt", names=["weight", "bias"])[name], 0.5, 1e-26
            )
            for i in range(2)
        ]
        expected = ota_merge([sources["m0"][name], sources["m1"][name]], sources["base"][name], weights)
        torch.testing.assert_close(out[name], expected)
        assert not torch.allclose(out[name], (sources["m0"][name] + sources["m1"][name]) / 2, atol=1e-4)


def test_missing_or_mismatched_second_moments_are_reported_before_merging(tmp_path: Path) -> None:
    from evomerge.statistics.cache import write_folder

    base, fine = {"w": torch.zeros(3, 2)}, {"w": torch.ones(3, 2)}
    sources = {"base": base, "m0": fine, "m1": fine}
    plan: dict[str, Any] = {
        "merge_method": "ota",
        "base_model": "base",
        "models": [{"model": "m0"}, {"model": "m1"}],
    }
    with pytest.raises(ConfigError, match="statistics"):
        run_plan(plan, sources)
    write_folder(tmp_path / "fisher", {}, {"w": torch.ones(3, 2)}, {})
    good = write_second_moments({"w": torch.ones(3, 2)}, tmp_path / "good").path
    cases = [
        (tmp_path / "fisher", "holds no second moments"),
        (write_second_moments({"w": torch.ones(2, 3)}, tmp_path / "transposed").path, "shape"),
        (write_second_moments({"other": torch.ones(3, 2)}, tmp_path / "other").path, "missing from"),
    ]
    for bad, message in cases:
        plan["models"] = [
            {"model": "m0", "parameters": {"statistics": str(good)}},
            {"model": "m1", "parameters": {"statistics": str(bad)}},
        ]
        with pytest.raises(StatisticsError, match=message):
            run_plan(plan, sources)
    no_base = {
        "merge_method": "ota",
        "models": [{"model": "m0", "parameters": {"statistics": str(good)}}],
        "parameters": {"density": 0.5},
    }
    with pytest.raises(ConfigError, match="needs a base"):
        run_plan(no_base, sources)
