"""The fitness contract: results, seeded nested subsets, the registry and config validation, layering."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError, UnknownNameError
from evomerge.seeding import SeedTree
from fitness import FITNESS, FitnessResult, build_suite, suite_config
from fitness.fidelity import SubsetSampler, check_fraction, subset_size

FITNESS_DIR = Path(__file__).resolve().parents[2] / "fitness"


def test_result_coerces_objectives_and_flattens_per_example() -> None:
    r = FitnessResult({"acc": np.float32(0.5)}, [[1, 0], [0, 1]])
    assert r.objectives == {"acc": 0.5} and type(r.objectives["acc"]) is float
    assert r.per_example is not None and r.per_example.dtype == np.float64
    np.testing.assert_array_equal(r.per_example, [1.0, 0.0, 0.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 500),
    small=st.floats(0.01, 1.0),
    large=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**31),
)
def test_subsets_are_sorted_sized_nested_and_reproducible(n: int, small: float, large: float, seed: int) -> None:
    small, large = min(small, large), max(small, large)
    sampler = SubsetSampler(SeedTree(seed))
    a = sampler.indices("task", n, small)
    b = sampler.indices("task", n, large)
    assert len(a) == (subset_size(n, small) if n else 0) and len(b) == (subset_size(n, large) if n else 0)
    assert list(a) == sorted(set(a.tolist())) and all(0 <= i < n for i in a)
    assert set(a.tolist()) <= set(b.tolist())
    np.testing.assert_array_equal(a, SubsetSampler(SeedTree(seed)).indices("task", n, small))


def test_subset_size_rounds_up_and_keeps_one() -> None:
    assert subset_size(200, 0.25) == 50
    assert subset_size(10, 0.01) == 1
    assert subset_size(7, 0.5) == math.ceil(3.5)
    assert subset_size(30, 1.0) == 30


def test_subsets_depend_on_seed_and_key() -> None:
    first = SubsetSampler(SeedTree(1)).indices("a", 1000, 0.1)
    assert not np.array_equal(first, SubsetSampler(SeedTree(2)).indices("a", 1000, 0.1))
    assert not np.array_equal(first, SubsetSampler(SeedTree(1)).indices("b", 1000, 0.1))
    np.testing.assert_array_equal(SubsetSampler(SeedTree(1)).indices("a", 1000, None), np.arange(1000))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_fidelity_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="fidelity"):
        check_fraction(bad)


def test_set_fidelity_and_label() -> None:
    suite = build_suite({"name": "accuracy", "dataset": "digits"})
    assert suite.fidelity is None and suite.fidelity_label() == "full"
    suite.set_fidelity(0.25)
    assert suite.fidelity == 0.25 and suite.fidelity_label() == "subset:0.25"
    suite.set_fidelity(1.0)
    assert suite.fidelity is None


def test_unknown_suite_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        build_suite({"name": "acuracy"})
    for name in ("accuracy", "callable", "composite", "lm_eval", "perplexity"):
        assert name in str(err.value)
    assert str(err.value).startswith("fitness.name:")


def test_unknown_option_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown accuracy suite option 'batchsize' \(did you mean 'batch_size'\?\)"):
        suite_config({"name": "accuracy", "batchsize": 4})


def test_missing_name_and_non_mapping_are_clear() -> None:
    with pytest.raises(ConfigError, match="missing suite 'name'; known fitness suites: accuracy"):
        suite_config({"dataset": "digits"})
    with pytest.raises(ConfigError, match="expected a mapping"):
        suite_config(["accuracy"])  # type: ignore[arg-type]


def test_dotted_suite_class_and_registry_entries() -> None:
    assert FITNESS.get("accuracy").name == "accuracy"
    cfg = suite_config({"name": "fitness.accuracy:AccuracySuite", "dataset": "digits"})
    suite = build_suite(cfg)
    assert type(suite).__name__ == "AccuracySuite"
    with pytest.raises(ConfigError, match="not a FitnessSuite subclass"):
        build_suite({"name": "fitness.accuracy:AccuracyConfig"})


def test_weight_must_be_finite_and_non_negative() -> None:
    with pytest.raises(ConfigError, match="weight"):
        suite_config({"name": "accuracy", "weight": -1})
    with pytest.raises(ConfigError, match="weight"):
        suite_config({"name": "accuracy", "weight": float("inf")})


def test_fitness_imports_only_lower_layers() -> None:
    forbidden = ("evomerge.population", "evomerge.strategies", "evomerge.distributed", "evomerge.cli", "search_spaces")
    for path in FITNESS_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.startswith(forbidden)]
            assert not bad, f"{path.name} imports {bad}"
