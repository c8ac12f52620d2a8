"""Per-example log-likelihood terms of a classifier or a causal LM, the quantity Fisher information is about.

Both kinds reduce to the same shape so one Fisher routine serves them: ``log_probs`` [B, T, V] (the log
predictive distribution at each of T positions; T = 1 for a classifier), ``mask`` [B, T] (positions that
count) and ``labels`` [B, T] (the data's targets: class labels, or the next tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.statistics.data import TaskKind


@dataclass
class LikelihoodTerms:
    log_probs: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


def _logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, tuple | list):
        logits = output[0]
    if logits is None:
        logits = output
    if not isinstance(logits, torch.Tensor):
        raise StatisticsError(f"the model returned {type(output).__name__}, not logits")
    return logits


def _ids_and_mask(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise StatisticsError("a causal-LM batch dict needs an 'input_ids' entry")
        return batch["input_ids"], batch.get("attention_mask")
    if isinstance(batch, torch.Tensor):
        return batch, None
    raise StatisticsError(f"a causal-LM batch must be an input_ids tensor or a dict, got {type(batch).__name__}")


def _pair(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise StatisticsError(f"a classification batch must be (inputs, labels), got {type(batch).__name__}")
    return batch[0], batch[1]


def batch_size(batch: Any, task: TaskKind) -> int:
    if task == "classification":
        return len(_pair(batch)[1])
    return len(_ids_and_mask(batch)[0])


def slice_batch(batch: Any, task: TaskKind, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch, in the batch's own form."""
    if task == "classification":
        x, y = _pair(batch)
        return x[start:stop], y[start:stop]
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    return batch[start:stop]


def limited(batches: Iterable[Any], task: TaskKind, max_examples: int | None) -> Iterator[Any]:
    """The batches, the last one cut short, so that at most ``max_examples`` rows come out."""
    left = max_examples
    for batch in batches:
        if left is not None and left <= 0:
            return
        n = batch_size(batch, task)
        if left is not None and n > left:
            batch, n = slice_batch(batch, task, 0, left), left
        if left is not None:
            left -= n
        yield batch


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def forward_inputs(model: nn.Module, batch: Any, task: TaskKind) -> Any:
    """Run the model on a batch (for the Gram hooks); returns its raw output."""
    if task == "classification":
        return model(_pair(batch)[0])
    ids, mask = _ids_and_mask(batch)
    return model(input_ids=ids, attention_mask=mask) if mask is not None else model(input_ids=ids)


def likelihood_terms(model: nn.Module, batch: Any, task: TaskKind) -> LikelihoodTerms:
    """Log-probabilities, mask and data labels of a batch (with the autograd graph, for gradients)."""
    logits = _logits(forward_inputs(model, batch, task)).float()
    if task == "classification":
        labels = _pair(batch)[1].long()
        if logits.dim() != 2:
            raise StatisticsError(f"a classifier must return [batch, classes] logits, got shape {list(logits.shape)}")
        log_probs = torch.log_softmax(logits, dim=-1).unsqueeze(1)
        return LikelihoodTerms(log_probs, torch.ones_like(labels, dtype=torch.bool).unsqueeze(1), labels.unsqueeze(1))
    ids, mask = _ids_and_mask(batch)
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    keep = torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return LikelihoodTerms(log_probs, keep, ids[:, 1:].long())
