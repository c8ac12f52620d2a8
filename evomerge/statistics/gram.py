"""Input Gram matrices of every ``nn.Linear``, gathered by forward hooks: G = Σ_n x_n x_nᵀ.

RegMean (Jin et al., Dataless Knowledge Fusion by Merging Weights of Language Models, ICLR 2023) needs,
per linear layer, the inner products of the inputs the layer saw on the model's own data. Every position
of every example is one row (a token of a sequence counts like an example); padding tokens are included.
Sums are kept in float64 while gathering and stored with their row counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.progress import Bar
from evomerge.statistics.data import TaskKind
from evomerge.statistics.likelihood import batch_size, forward_inputs


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Weight name → layer, for every ``nn.Linear`` (tied layers once, under their first name)."""
    return {(f"{name}.weight" if name else "weight"): m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def input_grams(model: nn.Module, batches: Iterable[Any], task: TaskKind,
                bar: Bar) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Σ x xᵀ of every linear layer's inputs over all batches, and the number of rows summed."""
    layers = linear_layers(model)
    if not layers:
        raise StatisticsError("the model has no nn.Linear layer to gather Gram matrices for")
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(layers, 0)

    def hook_for(name: str, layer: nn.Linear) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            rows = args[0].detach().reshape(-1, layer.in_features).double()
            if name not in grams:
                grams[name] = torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64, device=rows.device)
            grams[name].addmm_(rows.T, rows)
            counts[name] += rows.shape[0]

        return hook

    handles = [layer.register_forward_hook(hook_for(name, layer)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                forward_inputs(model, batch, task)
                bar.advance(batch_size(batch, task))
    finally:
        for h in handles:
            h.remove()
    unused = [name for name, c in counts.items() if c == 0]
    for name in unused:  # layers the forward pass never reached (e.g. an unused head)
        counts.pop(name)
    return grams, counts
