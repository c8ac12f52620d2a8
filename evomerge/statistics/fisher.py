"""Diagonal Fisher information by per-example gradients.

F = (1/N) Σ_n E_y[(∂_θ log p(y | x_n))²], elementwise (Matena & Raffel, Merging Models with Fisher-Weighted
Averaging, NeurIPS 2022). The square is taken of each example's own gradient: squaring a batch-summed
gradient (as FusionBench/MergeLM do) keeps cross terms between examples and is not the diagonal Fisher.
For a sequence, log p(y | x) is the sum of its tokens' log-probabilities. Which y: see ``FisherLabels``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.progress import Bar
from evomerge.statistics.data import TaskKind
from evomerge.statistics.likelihood import LikelihoodTerms, batch_size, likelihood_terms, slice_batch
from evomerge.statistics.settings import FisherLabels


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.is_floating_point()}


def _squared_grads(outputs: torch.Tensor, params: list[nn.Parameter], weights: torch.Tensor | None) -> list[torch.Tensor]:
    """Σ_k w_k (∂ outputs[k])² per parameter (``outputs`` 1-D; ``weights`` None: a single output)."""
    if weights is None:
        grads = torch.autograd.grad(outputs.sum(), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.square() for g, p in zip(grads, params)]
    eye = torch.eye(len(outputs), dtype=outputs.dtype, device=outputs.device)
    grads = torch.autograd.grad(outputs, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    out = []
    for g, p in zip(grads, params):
        if g is None:
            out.append(torch.zeros_like(p))
        else:
            out.append(torch.tensordot(weights.to(g.dtype), g.square(), dims=1))
    return out


def _labels(terms: LikelihoodTerms, mode: FisherLabels, generator: torch.Generator) -> torch.Tensor:
    if mode == "true":
        return terms.labels
    if mode == "predicted":
        return terms.log_probs.detach().argmax(dim=-1)
    probs = terms.log_probs.detach().exp().reshape(-1, terms.log_probs.shape[-1])
    drawn = torch.multinomial(probs.cpu(), 1, generator=generator).to(terms.labels.device)
    return drawn.reshape(terms.labels.shape)


def example_fisher(terms: LikelihoodTerms, params: list[nn.Parameter], mode: FisherLabels,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """One example's contribution, (∂ log p(y|x))² (or its expectation over y), per parameter."""
    if mode == "expected":
        if terms.log_probs.shape[1] != 1:
            raise StatisticsError("fisher_labels 'expected' needs one prediction per example (a classifier); "
                                  "use 'sampled', 'predicted' or 'true' for language models")
        log_probs = terms.log_probs[0, 0]
        return _squared_grads(log_probs, params, log_probs.detach().exp())
    labels = _labels(terms, mode, generator)
    picked = terms.log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return _squared_grads((picked * terms.mask).sum().reshape(1), params, None)


def diagonal_fisher(model: nn.Module, batches: Iterable[Any], task: TaskKind, mode: FisherLabels,
                    generator: torch.Generator, bar: Bar) -> tuple[dict[str, torch.Tensor], int]:
    """Mean per-example squared gradients of every floating-point parameter, and the example count."""
    named = trainable(model)
    params = list(named.values())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n = 0
    try:
        with torch.enable_grad():
            for batch in batches:
                for i in range(batch_size(batch, task)):
                    terms = likelihood_terms(model, slice_batch(batch, task, i, i + 1), task)
                    for acc, sq in zip(sums, example_fisher(terms, params, mode, generator)):
                        acc.add_(sq)
                    n += 1
                    bar.advance()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    if n == 0:
        raise StatisticsError("the calibration data yielded no examples")
    return {name: acc / n for name, acc in zip(named, sums)}, n
