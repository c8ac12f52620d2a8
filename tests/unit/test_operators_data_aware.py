"""Data-aware operators (fisher, regmean) against closed forms, and through the planner and `evomerge merge`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from evomerge.errors import ConfigError, StatisticsError
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.operator import MergeInputs, get_operator
from evomerge.merge.operators.fisher import fisher_average
from evomerge.merge.operators.regmean import regmean_solve
from evomerge.merge.params import ResolvedParams
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.plan import MergePlan
from evomerge.statistics.cache import write_folder


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.1, 5.0), min_size=2, max_size=4), st.integers(0, 10_000))
def test_fisher_with_equal_fishers_is_the_weighted_average(weights: list[float], seed: int) -> None:
    tensors = [randn(3, 4, seed=seed + i) for i in range(len(weights))]
    shared = randn(3, 4, seed=seed - 1).abs() + 0.01
    merged = fisher_average(tensors, [shared] * len(tensors), weights, 1e-6)
    expected = sum(w * t for w, t in zip(weights, tensors)) / sum(weights)
    torch.testing.assert_close(merged, expected)


def test_fisher_returns_the_model_whose_fisher_dominates() -> None:
    tensors = [randn(5, 2, seed=i) for i in range(3)]
    fishers = [torch.full((5, 2), 1e-6, dtype=torch.float64) for _ in range(3)]
    fishers[1] = torch.full((5, 2), 1e6, dtype=torch.float64)
    torch.testing.assert_close(fisher_average(tensors, fishers, [1.0, 1.0, 1.0], 1e-9), tensors[1], rtol=1e-9, atol=1e-9)


def test_fisher_floor_turns_zero_fishers_into_the_weighted_average() -> None:
    tensors = [randn(4, seed=i) for i in range(2)]
    zero = torch.zeros(4, dtype=torch.float64)
    merged = fisher_average(tensors, [zero, zero], [1.0, 3.0], 1e-6)
    torch.testing.assert_close(merged, (tensors[0] + 3 * tensors[1]) / 4)


def stacked_least_squares(xs: list[torch.Tensor], ws: list[torch.Tensor]) -> torch.Tensor:
    """argmin_W Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², solved directly on the concatenated regression problems."""
    x = torch.cat(xs)
    y = torch.cat([xi @ wi.T for xi, wi in zip(xs, ws)])
    return torch.linalg.lstsq(x, y).solution.T


def regression_problem(k: int = 3, n_in: int = 6, n_out: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs = [randn(20 + 5 * i, n_in, seed=10 + i) * (1 + i) for i in range(k)]
    ws = [randn(n_out, n_in, seed=100 + i) for i in range(k)]
    return xs, ws


def test_regmean_with_alpha_one_is_the_least_squares_solution_of_the_stacked_problems() -> None:
    xs, ws = regression_problem()
    merged = regmean_solve(ws, [x.T @ x for x in xs], alpha=1.0)
    torch.testing.assert_close(merged, stacked_least_squares(xs, ws), rtol=1e-5, atol=1e-5)
    # the default relative ridge moves a well-posed solution by far less than the tolerance
    torch.testing.assert_close(regmean_solve(ws, [x.T @ x for x in xs], 1.0, ridge=1e-6),
                               stacked_least_squares(xs, ws), rtol=1e-5, atol=1e-5)


def test_regmean_uses_the_torch_layout_even_where_shapes_cannot_tell() -> None:
    """With square weights the [in, out] formula (Σ G)⁻¹ Σ G_i W_i also type-checks; only the
    [out, in] one, Σ W_i G_i (Σ G)⁻¹, solves the regression problems."""
    xs, ws = regression_problem(n_in=5, n_out=5)
    grams = [x.T @ x for x in xs]
    merged = regmean_solve(ws, grams, alpha=1.0)
    torch.testing.assert_close(merged, stacked_least_squares(xs, ws), rtol=1e-5, atol=1e-5)
    in_out_layout = torch.linalg.solve(sum(grams), sum(g @ w for g, w in zip(grams, ws)))
    assert not torch.allclose(merged, in_out_layout, atol=1e-3)


def test_regmean_alpha_below_one_trades_fit_for_shrinkage() -> None:
    xs, ws = regression_problem()
    grams = [x.T @ x for x in xs]

    def loss(w: torch.Tensor) -> float:
        return float(sum(((x @ w.T - x @ wi.T) ** 2).sum() for x, wi in zip(xs, ws)))

    exact, partial, diagonal = (regmean_solve(ws, grams, a) for a in (1.0, 0.5, 0.0))
    assert loss(exact) < loss(partial) < loss(diagonal)  # α = 1 is the least-squares optimum
    # α = 0 keeps only the diagonals: each input column is a Gram-diagonal-weighted mean of the models'
    d = torch.stack([torch.diagonal(g) for g in grams])  # [k, in]
    column_mean = sum(w * d[i] for i, w in enumerate(ws)) / d.sum(0)
    torch.testing.assert_close(diagonal, column_mean)


def test_regmean_with_equal_grams_is_the_plain_average() -> None:
    xs, ws = regression_problem()
    g = xs[0].T @ xs[0]
    for alpha in (0.0, 0.3, 1.0):
        torch.testing.assert_close(regmean_solve(ws, [g, g, g], alpha), sum(ws) / 3)


def test_regmean_ridge_sends_unspanned_inputs_to_the_plain_average() -> None:
    xs, ws = regression_problem()
    xs = [torch.cat([x[:, :5], torch.zeros(len(x), 1, dtype=x.dtype)], 1) for x in xs]  # feature 5 always 0
    merged = regmean_solve(ws, [x.T @ x for x in xs], 1.0, ridge=1e-8)
    torch.testing.assert_close(merged[:, 5], torch.stack(ws).mean(0)[:, 5])
    assert torch.isfinite(merged).all()


# ------------------------------------------------------------------ through statistics folders and the engine
def model_tensors(seed: int) -> dict[str, torch.Tensor]:
    return {"layers.0.weight": randn(4, 3, seed=seed).float(), "layers.0.bias": randn(4, seed=seed + 50).float()}


def write_statistics(folder: Path, seed: int, fisher_scale: float = 1.0) -> tuple[Path, torch.Tensor, torch.Tensor]:
    x = randn(9, 3, seed=seed + 200).float()
    fisher = {"layers.0.weight": randn(4, 3, seed=seed + 300).abs().float() * fisher_scale,
              "layers.0.bias": randn(4, seed=seed + 400).abs().float() * fisher_scale}
    norm = float(sum(f.double().square().sum() for f in fisher.values())) ** 0.5
    write_folder(folder, {"gram_counts": {"layers.0.weight": 9}, "fisher_norm": norm}, fisher, {"layers.0.weight": x.T @ x})
    return folder, fisher["layers.0.weight"], x.T @ x


def run_plan(plan: dict[str, object], sources: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    infos = {r: SourceInfo(r, {n: tuple(t.shape) for n, t in sd.items()}, {}) for r, sd in sources.items()}
    compiled = compile_plan(MergePlan.from_dict(plan), infos)
    executor = MergeExecutor(compiled, lambda i, n: sources[compiled.sources[i]][n])
    return {task.out_name: executor.run(task).clone() for task in compiled.tasks}


def test_fisher_and_regmean_read_the_folders_a_recipe_names(tmp_path: Path) -> None:
    sources = {"a": model_tensors(1), "b": model_tensors(2)}
    stats = {r: write_statistics(tmp_path / r, seed) for r, seed in (("a", 1), ("b", 2))}
    models = [{"model": r, "parameters": {"statistics": str(stats[r][0]), "weight": w}} for r, w in (("a", 1.0), ("b", 2.0))]
    out = run_plan({"merge_method": "fisher", "models": models}, sources)
    expected = fisher_average([sources["a"]["layers.0.weight"], sources["b"]["layers.0.weight"]],
                              [stats["a"][1], stats["b"][1]], [1.0, 2.0], 1e-6)
    torch.testing.assert_close(out["layers.0.weight"], expected)
    out = run_plan({"merge_method": "regmean", "models": models, "parameters": {"alpha": 1.0, "ridge": 0.0}}, sources)
    w = regmean_solve([sources[r]["layers.0.weight"] for r in "ab"], [stats[r][2] for r in "ab"], 1.0, 0.0, [1.0, 2.0])
    torch.testing.assert_close(out["layers.0.weight"], w.float())
    bias = (sources["a"]["layers.0.bias"] + 2 * sources["b"]["layers.0.bias"]) / 3  # no Gram: weighted average
    torch.testing.assert_close(out["layers.0.bias"], bias)


def test_missing_or_mismatched_statistics_are_reported_before_merging(tmp_path: Path) -> None:
    sources = {"a": model_tensors(1), "b": model_tensors(2)}
    write_statistics(tmp_path / "a", 1)
    with pytest.raises(ConfigError, match="statistics"):
        run_plan({"merge_method": "fisher", "models": [{"model": "a"}, {"model": "b"}]}, sources)
    models = [{"model": r, "parameters": {"statistics": str(tmp_path / r)}} for r in "ab"]
    with pytest.raises(StatisticsError, match="not a statistics folder"):
        run_plan({"merge_method": "fisher", "models": models}, sources)
    write_folder(tmp_path / "b", {"gram_counts": {}}, {"layers.0.weight": torch.ones(3, 4)}, {})
    with pytest.raises(StatisticsError, match="shape"):
        run_plan({"merge_method": "fisher", "models": models}, sources)
    with pytest.raises(StatisticsError, match="no gram"):
        run_plan({"merge_method": "regmean", "models": models}, sources)


def test_operators_called_directly_open_the_folders_themselves(tmp_path: Path) -> None:
    folders = [write_statistics(tmp_path / str(i), i, fisher_scale=10.0**i)[0] for i in range(2)]
    tensors = [model_tensors(i)["layers.0.bias"] for i in range(2)]
    params = ResolvedParams({"fisher_floor": 1e-6, "normalize_fisher": False}, {"weight": [1.0, 1.0], "statistics": [str(f) for f in folders]})
    merged = get_operator("fisher").fn(MergeInputs(tensors, None, "layers.0.bias"), params)
    fishers = [load_file(str(f / "fisher.safetensors"))["layers.0.bias"] for f in folders]
    torch.testing.assert_close(merged, fisher_average(tensors, fishers, [1.0, 1.0], 1e-6))


def test_normalize_fisher_ignores_each_models_overall_fisher_scale(tmp_path: Path) -> None:
    sources = {"a": model_tensors(1), "b": model_tensors(2)}
    results: dict[tuple[float, bool], torch.Tensor] = {}
    for scale in (1.0, 1000.0):
        write_statistics(tmp_path / f"a{scale}", 1)
        write_statistics(tmp_path / f"b{scale}", 2, fisher_scale=scale)  # all of b's Fisher, and its norm, × scale
        models = [{"model": r, "parameters": {"statistics": str(tmp_path / f"{r}{scale}")}} for r in "ab"]
        for normalize in (False, True):
            params = {"normalize_fisher": normalize, "fisher_floor": 1e-12}
            results[scale, normalize] = run_plan({"merge_method": "fisher", "models": models, "parameters": params},
                                                 sources)["layers.0.weight"]
    torch.testing.assert_close(results[1.0, True], results[1000.0, True])
    assert not torch.allclose(results[1.0, False], results[1000.0, False], atol=1e-3)


def test_evomerge_merge_runs_fisher_and_regmean_recipes_on_checkpoints(tmp_path: Path) -> None:
    from evomerge.merge.to_disk import merge_to_disk
    from evomerge.statistics import StatisticsSettings, collect_checkpoint_statistics, token_data
    from evomerge.tiny_models import make_tiny_model, perturbed_copy

    base = tmp_path / "base"
    make_tiny_model(base, seed=0, vocab_size=40, hidden=16, layers=1, heads=2)
    dirs = [perturbed_copy(base, tmp_path / f"ft{i}", seed=i + 1, scale=0.05) for i in range(2)]
    settings_ = StatisticsSettings(fisher_labels="true", max_examples=4)
    folders = []
    for i, d in enumerate(dirs):
        ids = torch.randint(3, 40, (4, 8), generator=torch.Generator().manual_seed(i))
        folders.append(collect_checkpoint_statistics(d, token_data(ids, f"ids-{i}"), settings_,
                                                     cache_dir=tmp_path / "stats", progress=False).path)
    name = "model.layers.0.mlp.up_proj.weight"
    ws = [load_file(str(d / "model.safetensors"))[name] for d in dirs]
    for method, extra in (("fisher", {}), ("regmean", {"alpha": 0.8})):
        recipe = MergePlan.from_dict({
            "merge_method": method, "dtype": "float32", "parameters": extra,
            "models": [{"model": str(d), "parameters": {"statistics": str(f)}} for d, f in zip(dirs, folders)],
        })
        out = merge_to_disk(recipe, tmp_path / f"out-{method}", progress=False)
        merged = load_file(str(out / "model.safetensors"))[name]
        if method == "fisher":
            fishers = [load_file(str(f / "fisher.safetensors"))[name] for f in folders]
            expected = fisher_average(ws, fishers, [1.0, 1.0], 1e-6)
        else:
            grams = [load_file(str(f / "gram.safetensors"))[name] for f in folders]
            expected = regmean_solve(ws, grams, 0.8, 1e-6).float()
        torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(merged, (ws[0] + ws[1]) / 2, atol=1e-4)
