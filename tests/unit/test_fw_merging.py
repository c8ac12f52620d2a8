"""FW-Merging (evomerge/merge/frank_wolfe*.py): the oracle's choices, the steps, the calibration objective."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evomerge.errors import ConfigError, IncompatibleModelsError, StatisticsError
from evomerge.io import save_state_dict
from evomerge.merge.frank_wolfe import (
    FrankWolfeSettings,
    Objective,
    frank_wolfe_merge,
    settings_from_parameters,
)
from evomerge.merge.frank_wolfe_objective import calibration_objective, frank_wolfe_checkpoints
from evomerge.merge.frank_wolfe_recipe import frank_wolfe_to_disk
from evomerge.plan import MergePlan
from evomerge.statistics.data import CalibrationData, tensor_batches, token_data

Tensors = dict[str, torch.Tensor]


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def quadratic(targets: Tensors) -> Objective:
    """f(θ) = Σ_p ‖θ_p − target_p‖²: minimised by a different pool model in each layer."""

    def objective(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([((weights[n] - t) ** 2).sum() for n, t in targets.items()]).sum()

    return objective


def toy_pool(base: Tensors, scale: float = 2.0) -> list[Tensors]:
    """Model m moves every layer along its own axis e_m: the task vectors are orthogonal."""
    eye = torch.eye(4)
    return [{n: t + scale * eye[m] for n, t in base.items()} for m in range(3)]


@pytest.mark.parametrize(
    ("score", "init", "base_seed"),
    [("cosine", "base", None), ("inner", "task_arithmetic", 3), ("inner", "average", 4)],
)
def test_the_best_model_per_layer_is_chosen_and_the_loss_falls_every_step(
    score: str, init: str, base_seed: int | None
) -> None:
    base = {
        n: torch.zeros(4) if base_seed is None else randn(4, seed=base_seed + i) for i, n in enumerate("ab")
    }
    pool = toy_pool(base)
    targets = {"a": pool[1]["a"], "b": pool[2]["b"]}
    settings = FrankWolfeSettings.model_validate(
        {"max_iters": 6, "scaling": 0.5, "score": score, "init": init}
    )
    result = frank_wolfe_merge(base, pool, quadratic(targets), settings, labels=["m0", "m1", "m2"])
    assert all(choice == {"a": "m1", "b": "m2"} for choice in result.choices)
    assert len(result.losses) == 7
    assert all(later < earlier for earlier, later in zip(result.losses, result.losses[1:]))
    # each step is θ ← θ + λγ_t (s − θ) with γ_t = 2/(t+2): the distance to the target shrinks by (1 − λγ_t)
    starts: dict[str, Tensors] = {
        "base": base,
        "average": {n: torch.stack([p[n] for p in pool]).mean(0) for n in base},
        "task_arithmetic": {
            n: base[n] + 0.3 * torch.stack([p[n] - base[n] for p in pool]).sum(0) for n in base
        },
    }
    initial = starts[init]
    for name, target in targets.items():
        remaining = torch.tensor(1.0)
        for t in range(6):
            remaining *= 1 - 0.5 * min(1.0, 2 / (t + 2))
        torch.testing.assert_close(result.weights[name], target + remaining * (initial[name] - target))


def test_model_granularity_steps_every_layer_towards_one_model() -> None:
    base = {n: torch.zeros(4) for n in "ab"}
    pool = toy_pool(base)
    targets = {"a": pool[1]["a"], "b": 0.5 * pool[1]["b"] + 0.5 * pool[2]["b"]}  # m1 is best overall
    settings = FrankWolfeSettings(max_iters=2, granularity="model", init="base", include_initial=False)
    result = frank_wolfe_merge(base, pool, quadratic(targets), settings, labels=["m0", "m1", "m2"])
    assert result.choices[0] == {"a": "m1", "b": "m1"}
    torch.testing.assert_close(result.weights["a"], pool[1]["a"])  # γ_0 = 1: the first step lands on m1


def test_a_stationary_merge_stops_at_once() -> None:
    base = {"w": randn(3, seed=0)}
    pool = [{"w": base["w"] + randn(3, seed=1)}]
    result = frank_wolfe_merge(base, pool, quadratic({"w": base["w"]}), FrankWolfeSettings(init="base"))
    assert result.losses == [0.0] and result.choices == [{}]
    assert torch.equal(result.weights["w"], base["w"])


def test_checkpoint_folders_stream_to_the_same_merge(tmp_path: Path) -> None:
    base = {"a": randn(4, seed=0), "b": randn(4, seed=1), "steps": torch.tensor([7])}
    pool = [{**p, "steps": torch.tensor([7])} for p in toy_pool({n: base[n] for n in "ab"})]
    dirs = [save_state_dict(p, tmp_path / f"m{i}") for i, p in enumerate(pool)]
    targets = {"a": pool[0]["a"], "b": pool[2]["b"]}
    settings = FrankWolfeSettings(max_iters=3, score="inner")
    in_memory = frank_wolfe_merge(base, pool, quadratic(targets), settings)
    streamed = frank_wolfe_merge(save_state_dict(base, tmp_path / "base"), dirs, quadratic(targets), settings)
    for name in base:
        torch.testing.assert_close(streamed.weights[name], in_memory.weights[name])
    assert streamed.losses == pytest.approx(in_memory.losses)
    assert torch.equal(
        streamed.weights["steps"], torch.tensor([7])
    )  # non-floating tensors come from the base


# ------------------------------------------------------------------ the calibration objective
def classification_problem() -> tuple[nn.Linear, CalibrationData, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = randn(10, 5, seed=1), torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(2))
    return model, CalibrationData(tensor_batches(x, y, 4), "toy", "classification", 10), x, y


def test_calibration_objective_is_the_mean_cross_entropy_with_its_gradient() -> None:
    model, data, x, y = classification_problem()
    weights = {"weight": randn(3, 5, seed=3).requires_grad_(), "bias": randn(3, seed=4).requires_grad_()}
    terms = list(calibration_objective(model, data)(weights))
    assert len(terms) == 3  # one per batch of 4, 4, 2
    loss = sum(terms)
    expected = nn.functional.cross_entropy(x @ weights["weight"].T + weights["bias"], y)
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, list(weights.values()))
    wanted = torch.autograd.grad(expected, list(weights.values()))
    for got, want in zip(grads, wanted):
        torch.testing.assert_close(got, want)
    assert torch.equal(model.weight, model.weight.detach())  # the module's own weights are untouched


def test_the_first_step_follows_the_oracle_on_the_cross_entropy_gradient() -> None:
    model, data, x, y = classification_problem()
    base = {n: t.detach().clone() for n, t in model.state_dict().items()}
    pool = [
        {n: t + 0.5 * randn(*t.shape, seed=10 * m + i) for i, (n, t) in enumerate(base.items())}
        for m in range(3)
    ]
    settings = FrankWolfeSettings(max_iters=1, include_initial=False)
    result = frank_wolfe_merge(
        base, pool, calibration_objective(model, data), settings, labels=["m0", "m1", "m2"]
    )
    start = {n: (base[n] + 0.3 * sum(p[n] - base[n] for p in pool)).requires_grad_() for n in base}
    loss = nn.functional.cross_entropy(x @ start["weight"].T + start["bias"], y)
    grads = dict(zip(start, torch.autograd.grad(loss, list(start.values()))))
    assert result.losses[0] == pytest.approx(float(loss.detach()))
    for name, g in grads.items():
        cosines = [
            float(torch.nn.functional.cosine_similarity(g.reshape(1, -1), p[name].reshape(1, -1)))
            for p in pool
        ]
        best = min(range(3), key=cosines.__getitem__)
        descends = float((g * (pool[best][name] - start[name].detach())).sum()) < 0
        assert result.choices[0][name] == (f"m{best}" if descends else "stay")


def test_fw_recipes_merge_tiny_causal_lm_checkpoints(tmp_path: Path) -> None:
    from evomerge.tiny_models import make_tiny_model, perturbed_copy

    base = tmp_path / "base"
    make_tiny_model(base, seed=0, vocab_size=40, hidden=16, layers=1, heads=2)
    dirs = [perturbed_copy(base, tmp_path / f"ft{i}", seed=i + 1, scale=0.05) for i in range(2)]
    ids = torch.randint(3, 40, (4, 8), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, str(tmp_path / "ids.safetensors"))
    settings = {"max_iters": 2, "scaling": 0.3}
    result = frank_wolfe_checkpoints(base, dirs, token_data(ids, "ids"), FrankWolfeSettings(**settings))
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert set(result.choices[0].values()) <= {str(d) for d in dirs} | {"initial", "stay"}
    name = "model.layers.0.mlp.up_proj.weight"
    assert result.choices[0][name] != "stay"
    recipe = {
        "merge_method": "fw",
        "base_model": "base",
        "models": [{"model": "ft0"}, {"model": "ft1"}],
        "parameters": {**settings, "calibration_data": "ids.safetensors"},
    }
    out = frank_wolfe_to_disk(MergePlan.from_dict(recipe), tmp_path / "out", base_dir=tmp_path)
    written = load_file(str(out / "model.safetensors"))
    assert set(written) == set(result.weights)
    torch.testing.assert_close(written[name], result.weights[name])
    assert (out / "config.json").is_file() and (out / "merge_recipe.yaml").is_file()
    del recipe["parameters"]["calibration_data"]  # type: ignore[attr-defined]
    with pytest.raises(StatisticsError, match="calibration_data"):
        frank_wolfe_to_disk(MergePlan.from_dict(recipe), tmp_path / "out2", base_dir=tmp_path)
    recipe["models"] = [{"model": "ft0", "parameters": {"weight": 1.0}}]
    with pytest.raises(ConfigError, match="no per-model parameters"):
        frank_wolfe_to_disk(MergePlan.from_dict(recipe), tmp_path / "out2", base_dir=tmp_path)


# ------------------------------------------------------------------ errors
def test_missing_inputs_and_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    base = {"w": torch.zeros(2)}
    objective = quadratic({"w": torch.ones(2)})
    with pytest.raises(StatisticsError, match="calibration data"):
        frank_wolfe_checkpoints(tmp_path, [tmp_path], None)
    empty = CalibrationData(tensor_batches(torch.zeros(0, 5), torch.zeros(0), 4), "empty")
    with pytest.raises(StatisticsError, match="no examples"):
        calibration_objective(nn.Linear(5, 3), empty)
    with pytest.raises(ConfigError, match="at least one model"):
        frank_wolfe_merge(base, [], objective)
    with pytest.raises(IncompatibleModelsError, match="has no tensor 'w'"):
        frank_wolfe_merge(base, [{"v": torch.zeros(2)}], objective)
    with pytest.raises(IncompatibleModelsError, match="shape"):
        frank_wolfe_merge(base, [{"w": torch.zeros(3)}], objective)
    with pytest.raises(ConfigError, match="one distinct label"):
        frank_wolfe_merge(base, [base, base], objective, labels=["x", "x"])
    with pytest.raises(ConfigError, match=r"parameters\.step_size"):
        settings_from_parameters({"step_size": -1})
    with pytest.raises(ConfigError, match=r"parameters\.granularity"):
        settings_from_parameters({"granularity": "tensor"})
    assert settings_from_parameters({"max_iters": 3}).max_iters == 3
