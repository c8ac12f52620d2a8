"""PLeaS as a whole-model merge: permutations, partial merging, then layer-wise least squares.

Nasery et al., "PLeaS: Merging Models with Permutations and Least Squares", CVPR 2025. Unlike the per-tensor
operators (``evomerge.merge.operator``), PLeaS is structural: the permutation chosen for layer l's outputs
also reorders layer l+1's inputs, and a partial merge changes the hidden widths, so the merged model has
other shapes than its sources. Hence its own contract: state dicts in, a state dict (and the new widths)
out, driven by each model's recorded linear-layer inputs (``evomerge.statistics.activations``) on one
shared set of unlabelled calibration rows.

Supported models: MLP stacks, ``x → L1 → φ → L2 → φ → … → Ln`` with ``nn.Linear`` layers (bias optional)
and one elementwise activation φ (checked by ``chain.mlp_chain``; anything else raises
``IncompatibleModelsError``). The input features and the outputs (classes) are shared by all models and are
never permuted; hidden units are. K ≥ 2 models: the paper merges two; here every model is matched to the
first (the anchor), the best-matched groups of K units are merged and the others kept, one per model.
No base model is used: the sources may be fine-tunes of one base or trained from different inits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evomerge.errors import ConfigError
from evomerge.merge.pleas.blocks import gather, initial_weight, row_blocks
from evomerge.merge.pleas.chain import ChainLayer, check_elementwise, mlp_chain
from evomerge.merge.pleas.lstsq import layer_mse, refit_layer
from evomerge.merge.pleas.matching import UnitGroups, kept_count, match_layer
from evomerge.statistics.activations import ActivationsFolder


class PleasSettings(BaseModel):
    """The knobs of a PLeaS merge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width_ratio: float | tuple[float, ...] = 1.0
    """Merged width / original width of the hidden layers, in [1, K]: one value, or one per hidden layer.
    1 merges every unit (same shape as the sources), K keeps all K models side by side."""
    ridge: float = Field(1e-4, ge=0.0)
    """Relative ridge of the least-squares refit towards the permute-and-average weights."""
    matching: Literal["activations", "identity"] = "activations"
    """``activations``: match hidden units by activation correlation (step 1); ``identity``: unit i of every
    model is unit i (fine-tunes of one base), correlations only choose which units to keep apart."""
    refit: bool = True
    """False skips step 2: the merged weights are the block-initialised permute-and-average ones."""


@dataclass(frozen=True)
class PleasResult:
    state: dict[str, torch.Tensor]
    """The merged model's tensors, float32, under the sources' names (hidden dimensions resized)."""
    widths: list[int]
    """Feature sizes along the chain: inputs, each hidden layer, outputs."""
    groups: list[UnitGroups]
    """How each hidden layer's units were matched and merged."""
    fit_mse: list[float]
    """Per layer, the mean squared error of the merged weights against the targets on the calibration rows."""


def pleas_merge(states: Sequence[Mapping[str, torch.Tensor]], activations: Sequence[ActivationsFolder],
                settings: PleasSettings | None = None) -> PleasResult:
    """Merge K ≥ 2 MLP stacks (see the module docstring) with PLeaS; deterministic given its inputs."""
    settings = settings or PleasSettings()
    if len(states) < 2 or len(states) != len(activations):
        raise ConfigError(f"pleas merges at least 2 models, each with its activations; got {len(states)} models "
                          f"and {len(activations)} activation folders")
    chain = mlp_chain(states, activations)
    n_models = len(states)
    ratios = _ratios(settings.width_ratio, len(chain) - 1)
    inputs = [[folder.inputs(layer.weight).double() for folder in activations] for layer in chain]
    weights = [[_weight(s, layer) for s in states] for layer in chain]
    outputs = [[x @ w[:, :-1].T + w[:, -1] for x, w in zip(inputs[i], weights[i])] for i in range(len(chain))]
    for i in range(1, len(chain)):
        for k in range(n_models):
            check_elementwise(outputs[i - 1][k], inputs[i][k], repr(chain[i].weight))

    groups = [UnitGroups.identity(chain[0].in_features, n_models)]
    for i, ratio in enumerate(ratios):
        n_units = chain[i].out_features
        groups.append(match_layer(inputs[i + 1], kept_count(n_units, n_models, ratio), settings.matching == "activations"))
    groups.append(UnitGroups.identity(chain[-1].out_features, n_models))

    state: dict[str, torch.Tensor] = {}
    fit_mse: list[float] = []
    for i, layer in enumerate(chain):
        ins, outs = groups[i], groups[i + 1]
        init = initial_weight([w[:, :-1] for w in weights[i]], [w[:, -1] for w in weights[i]], ins, outs)
        x = torch.cat([gather(inputs[i], ins), torch.ones(len(inputs[i][0]), 1, dtype=torch.float64)], dim=1)
        y = gather(outputs[i], outs)
        merged = init
        if settings.refit:
            merged = refit_layer(x, y, init, row_blocks(ins, outs, layer.bias is not None), settings.ridge)
        fit_mse.append(layer_mse(x, y, merged))
        state[layer.weight] = merged[:, :-1].float().contiguous()
        if layer.bias is not None:
            state[layer.bias] = merged[:, -1].float().contiguous()
    widths = [g.width for g in groups]
    return PleasResult(state, widths, groups[1:-1], fit_mse)


def _weight(state: Mapping[str, torch.Tensor], layer: ChainLayer) -> torch.Tensor:
    """[out, in + 1] float64: the weight with its bias (zeros when the layer has none) as the last column."""
    w = state[layer.weight].double()
    b = state[layer.bias].double() if layer.bias else torch.zeros(layer.out_features, dtype=torch.float64)
    return torch.cat([w, b[:, None]], dim=1)


def _ratios(width_ratio: float | tuple[float, ...], n_hidden: int) -> list[float]:
    if isinstance(width_ratio, tuple):
        if len(width_ratio) != n_hidden:
            raise ConfigError(f"gives {len(width_ratio)} values for {n_hidden} hidden layers", "width_ratio")
        return [float(r) for r in width_ratio]
    return [float(width_ratio)] * n_hidden
