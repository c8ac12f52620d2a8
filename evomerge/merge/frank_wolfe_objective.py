"""The data objective of FW-Merging on evomerge's calibration data, and its entry point for checkpoints.

f(θ) is the mean negative log-likelihood of the calibration labels (a classifier's classes, a causal LM's
next tokens) under the weights θ: the authors' labelled cross-entropy objective. It is evaluated with
``torch.func.functional_call`` on one model instance, so the weights being merged never have to be copied
into it, and yields one term per batch so that each batch's graph is freed by its own backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomerge.errors import IncompatibleModelsError, StatisticsError
from evomerge.merge.frank_wolfe import FrankWolfeResult, FrankWolfeSettings, Objective, frank_wolfe_merge
from evomerge.statistics.data import CalibrationData, TaskKind
from evomerge.statistics.likelihood import batch_size, likelihood_terms, limited, to_device


class _NegativeLogLikelihood(nn.Module):
    """Σ −log p(label) over a batch's counted positions (the module whose parameters get swapped)."""

    def __init__(self, model: nn.Module, task: TaskKind) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Any) -> torch.Tensor:
        terms = likelihood_terms(self.model, batch, self.task)
        picked = terms.log_probs.gather(-1, terms.labels.unsqueeze(-1)).squeeze(-1)
        return -(picked * terms.mask).sum()


def _counted(batch: Any, task: TaskKind) -> int:
    """How many label positions a batch contributes, read from the batch alone (no forward pass)."""
    if task == "classification":
        return batch_size(batch, task)
    ids = batch["input_ids"] if isinstance(batch, dict) else batch
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    return int(mask[:, 1:].sum()) if mask is not None else int(ids[:, 1:].numel())


def calibration_objective(
    model: nn.Module,
    data: CalibrationData,
    *,
    max_examples: int | None = None,
    device: str | torch.device | None = None,
) -> Objective:
    """f(θ) = −(1/n) Σ log p(label | input; θ) over ``data`` (at most ``max_examples`` examples), computed with
    ``model``'s architecture and the given weights (tensors it is not given come from ``model`` itself)."""
    scorer = _NegativeLogLikelihood(model.eval(), data.task)
    device = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    known = set(model.state_dict())
    total = sum(_counted(b, data.task) for b in limited(data.batches(), data.task, max_examples))
    if total == 0:
        raise StatisticsError(f"calibration data {data.identity!r} yielded no examples; fw needs some")

    def objective(weights: Mapping[str, torch.Tensor]) -> Iterator[torch.Tensor]:
        unknown = next((n for n in weights if n not in known), None)
        if unknown is not None:
            raise IncompatibleModelsError(
                f"tensor {unknown!r} of the merge is not a parameter or buffer of the model"
            )
        swapped = {f"model.{n}": t for n, t in weights.items()}
        for batch in limited(data.batches(), data.task, max_examples):
            yield torch.func.functional_call(scorer, swapped, (to_device(batch, device),)) / total

    return objective


def frank_wolfe_checkpoints(
    base_dir: str | Path,
    model_dirs: Sequence[str | Path],
    data: CalibrationData | None,
    settings: FrankWolfeSettings | None = None,
    *,
    model_class: str = "causal_lm",
    max_examples: int | None = None,
    device: str | torch.device = "cpu",
) -> FrankWolfeResult:
    """FW-Merging of checkpoint folders: the base's architecture (loaded once) scores the calibration data;
    the pool is streamed from disk. Write ``result.weights`` with ``evomerge.io.save_state_dict``."""
    if data is None:
        raise StatisticsError("fw needs calibration data (its objective is a loss on data); none was given")
    from evomerge.models import load_pretrained

    model = load_pretrained(base_dir, model_class)[0].to(device)
    objective = calibration_objective(model, data, max_examples=max_examples, device=device)
    return frank_wolfe_merge(str(base_dir), [str(d) for d in model_dirs], objective, settings, device=device)
