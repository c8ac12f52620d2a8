"""accuracy suite and its seeded splits, checked against scikit-learn's own predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from evomerge.errors import ConfigError
from fitness import build_suite
from fitness.datasets import load_dataset, load_split, split_indices


@pytest.fixture(scope="module")
def digits_classifier() -> tuple[LogisticRegression, torch.nn.Linear]:
    """A logistic regression fitted on the digits train split, and the same map as a torch Linear."""
    train = load_split("digits", "train")
    clf = LogisticRegression(max_iter=300).fit(train.x, train.y)
    linear = torch.nn.Linear(64, 10).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(clf.coef_))
        linear.bias.copy_(torch.from_numpy(clf.intercept_))
    return clf, linear


def test_splits_are_disjoint_complete_sized_and_seeded() -> None:
    parts = split_indices(1797, (0.6, 0.2, 0.2), seed=0, name="digits")
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(1797))
    assert [len(parts[s]) for s in ("train", "search", "test")] == [1078, 359, 360]
    again = split_indices(1797, (0.6, 0.2, 0.2), seed=0, name="digits")
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    assert not np.array_equal(parts["search"], split_indices(1797, (0.6, 0.2, 0.2), seed=1, name="digits")["search"])


def test_split_rows_are_the_datasets_rows() -> None:
    x, y = load_dataset("digits")
    search = load_split("digits", "search")
    np.testing.assert_array_equal(search.x, x[search.index])
    np.testing.assert_array_equal(search.y, y[search.index])
    assert search.x.min() >= 0.0 and search.x.max() <= 1.0


def test_accuracy_and_per_example_equal_sklearn(digits_classifier: tuple[LogisticRegression, torch.nn.Linear]) -> None:
    clf, linear = digits_classifier
    search = load_split("digits", "search")
    suite = build_suite({"name": "accuracy", "dataset": "digits", "batch_size": 50})
    result = suite(linear)  # float64 weights: the inputs follow the model's dtype
    assert result.objectives["accuracy"] == pytest.approx(clf.score(search.x, search.y), abs=1e-12)
    np.testing.assert_array_equal(result.per_example, (clf.predict(search.x) == search.y).astype(float))  # type: ignore[arg-type]
    assert result.objectives["accuracy"] > 0.9


def test_fidelity_scores_the_seeded_subset(digits_classifier: tuple[LogisticRegression, torch.nn.Linear]) -> None:
    _, linear = digits_classifier
    suite = build_suite({"name": "accuracy", "dataset": "digits"}, seed_tree=3)
    full = suite(linear)
    suite.set_fidelity(0.1)
    part = suite(linear)
    rows = suite.subset("examples", 359)
    assert len(rows) == 36 and part.metrics["n_examples"] == 36 and part.metrics["fidelity"] == "subset:0.1"
    np.testing.assert_array_equal(part.per_example, full.per_example[rows])  # type: ignore[index, arg-type]


def test_image_shape_and_model_outputs_with_logits_or_tuples() -> None:
    seen: list[tuple[int, ...]] = []

    class Conv(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            seen.append(tuple(x.shape[1:]))
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = 1.0
            return (logits,)

    class WithLogits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return type("Out", (), {"logits": torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 1.0)})()

    search = load_split("digits", "search")
    for model, shape in ((Conv(), "image"), (WithLogits(), "flat")):
        result = build_suite({"name": "accuracy", "dataset": "digits", "input_shape": shape})(model)
        assert result.objectives["accuracy"] == pytest.approx(float(np.mean(search.y == 3)))
    assert seen and set(seen) == {(1, 8, 8)}


def test_training_mode_is_restored() -> None:
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(64, 10))
    model.train()
    build_suite({"name": "accuracy"})(model)
    assert model.training


def test_held_out_split_needs_explicit_consent() -> None:
    with pytest.raises(ConfigError, match="split 'test'.*allow_test_split: true"):
        build_suite({"name": "accuracy", "split": "test"})
    suite = build_suite({"name": "accuracy", "split": "test", "allow_test_split": True})
    suite.prepare()
    assert suite.n_examples == 360  # type: ignore[attr-defined]


def test_mnist_subset_loads_and_splits() -> None:
    x, y = load_dataset("mnist")
    assert x.shape == (5000, 784) and set(np.unique(y).tolist()) == set(range(10))
    assert len(load_split("mnist", "search").y) == 1000


def test_unknown_dataset_lists_known_ones() -> None:
    suite = build_suite({"name": "accuracy", "dataset": "cifar"})
    with pytest.raises(ConfigError, match="unknown classification dataset 'cifar'.*digits, mnist"):
        suite.prepare()
