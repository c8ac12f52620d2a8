"""DARE and DELLA: seeded random drops, their rescaling and their expected values."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from evomerge.errors import ConfigError
from tests.unit.test_operators_contract import run_operator

RANDOMIZED = ("dare_linear", "dare_ties", "della", "della_linear")


def task(seed: int = 0, shape: tuple[int, ...] = (40, 25)) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen)
    return base, [base + torch.randn(shape, generator=gen) for _ in range(2)]


@pytest.mark.parametrize("method", RANDOMIZED)
def test_same_seed_same_output_other_seed_other_output(method: str) -> None:
    base, models = task()
    shared = {"density": 0.5, "epsilon": 0.2}
    first = run_operator(method, models, base, shared=shared, seed=11)
    again = run_operator(method, models, base, shared=shared, seed=11)
    other = run_operator(method, models, base, shared=shared, seed=12)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("method", ["dare_linear", "della_linear"])
def test_density_one_is_deterministic_task_arithmetic(method: str) -> None:
    base, models = task()
    out = run_operator(method, models, base, shared={"density": 1.0}, seed=3)
    torch.testing.assert_close(out, run_operator("task_arithmetic", models, base))


def mean_over_seeds(method: str, tau: torch.Tensor, shared: dict[str, Any], runs: int) -> torch.Tensor:
    base = torch.zeros_like(tau)
    total = torch.zeros_like(tau)
    for seed in range(runs):
        total += run_operator(method, [tau], base, shared=shared, seed=seed)
    return total / runs


def test_dare_expected_value_is_the_task_vector() -> None:
    gen = torch.Generator().manual_seed(0)
    tau = torch.randn(400, generator=gen)
    density, runs = 0.3, 600
    mean = mean_over_seeds("dare_linear", tau, {"density": density}, runs)
    # each run gives τ/d with probability d, else 0: variance τ²(1−d)/d per run
    sigma = tau.abs() * math.sqrt((1 - density) / density / runs)
    assert bool(((mean - tau).abs() <= 5 * sigma + 1e-6).all())
    kept_fraction = (
        run_operator("dare_linear", [tau], torch.zeros(400), shared={"density": density}) != 0
    ).float()
    assert abs(float(kept_fraction.mean()) - density) < 0.1


def test_della_expected_value_is_the_task_vector_and_big_entries_survive_more() -> None:
    gen = torch.Generator().manual_seed(1)
    tau = torch.randn(2, 200, generator=gen)
    density, epsilon, runs = 0.5, 0.3, 600
    shared = {"density": density, "epsilon": epsilon}
    mean = mean_over_seeds("della_linear", tau, shared, runs)
    # keep probability q ∈ [0.2, 0.8]; variance τ²(1−q)/q ≤ 4τ² per run
    assert bool(((mean - tau).abs() <= 5 * tau.abs() * math.sqrt(4.0 / runs) + 1e-6).all())

    kept = torch.zeros_like(tau)
    for seed in range(runs):
        kept += run_operator("della_linear", [tau], torch.zeros_like(tau), shared=shared, seed=seed) != 0
    frequency = kept / runs
    ranks = tau.abs().argsort(dim=1).argsort(dim=1).float() / (tau.shape[1] - 1)
    expected = density - epsilon + 2 * epsilon * ranks
    assert float((frequency - expected).abs().max()) < 5 * math.sqrt(0.25 / runs)


@pytest.mark.parametrize("method", ["dare_linear", "della_linear"])
def test_l1_rescale_preserves_the_l1_norm(method: str) -> None:
    gen = torch.Generator().manual_seed(2)
    tau = torch.randn(30, 30, generator=gen)
    out = run_operator(
        method, [tau], torch.zeros_like(tau), shared={"density": 0.4, "epsilon": 0.1, "rescale_mode": "l1"}
    )
    assert (out == 0).any()
    torch.testing.assert_close(out.abs().sum(), tau.abs().sum())


def test_without_rescale_kept_entries_are_unchanged() -> None:
    base, models = task(seed=3)
    out = run_operator("dare_linear", models[:1], base, shared={"density": 0.5, "rescale": False})
    kept = out != base
    torch.testing.assert_close(out[kept], models[0][kept])


def test_dare_ties_only_keeps_entries_agreeing_with_the_elected_sign() -> None:
    base = torch.zeros(500)
    plus, minus = torch.full((500,), 1.0), torch.full((500,), -0.5)
    out = run_operator("dare_ties", [plus, minus], base, shared={"density": 0.5, "normalize": False})
    # where both survive the sum is positive, so only `plus` counts; rescaled by 1/d
    assert set(out.unique().tolist()) <= {0.0, 2.0, -1.0}
    both_dropped_or_minus_only = out <= 0
    assert bool((out[~both_dropped_or_minus_only] == 2.0).all())


@pytest.mark.parametrize(("density", "epsilon"), [(0.9, 0.15), (0.1, 0.1), (0.5, 0.6)])
def test_della_epsilon_must_keep_probabilities_inside_unit_interval(density: float, epsilon: float) -> None:
    base, models = task()
    with pytest.raises(ConfigError, match="'epsilon'"):
        run_operator("della", models, base, shared={"density": density, "epsilon": epsilon})


def test_randomized_operator_without_generator_is_an_engine_error() -> None:
    from evomerge.merge.operator import MergeInputs, get_operator
    from tests.unit.test_operators_contract import resolve_params

    spec = get_operator("dare_linear")
    with pytest.raises(RuntimeError, match="generator"):
        spec.fn(MergeInputs([torch.ones(3)], torch.zeros(3), "w"), resolve_params(spec, 1))
