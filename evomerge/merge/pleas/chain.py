"""Which models PLeaS can merge: a chain of linear layers joined by one shared elementwise activation.

Permuting or widening a hidden layer is only function-preserving when nothing between two linear layers
mixes units: ``x → L1 → φ → L2 → φ → … → Ln`` with φ elementwise and the same for every unit (ReLU, GELU,
tanh, SiLU, identity, dropout in eval mode). Residual connections, normalisations over units (LayerNorm),
attention, convolutions and embeddings all break that, so this module checks, before anything is merged,
that

* every tensor of every model is the weight or bias of one linear layer, and all models have the same ones;
* the activations were recorded on the same calibration rows for every model, each layer ran once per
  forward pass, in one order, and each layer's width feeds the next;
* the input of each layer is, numerically, one elementwise function of the previous layer's output: sorted
  by pre-activation, the pooled (pre, post) pairs of all units must change by at most ``SLOPE`` × the step
  in pre-activation (plus round-off), which a residual stream or a normalisation breaks at once.

Anything else raises :class:`~evomerge.errors.IncompatibleModelsError` (or ``StatisticsError`` for
activations of the wrong data). Transformer MLP blocks (gate/up/down with the intermediate units permuted)
fit the same matching and refit, but are not supported yet.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from evomerge.errors import IncompatibleModelsError, StatisticsError
from evomerge.statistics.activations import ActivationsFolder

SLOPE = 10.0
"""Largest |Δ post| / |Δ pre| accepted between neighbouring pooled pairs (GELU's is 1.13, SiLU's 1.1)."""


@dataclass(frozen=True)
class ChainLayer:
    weight: str
    bias: str | None
    in_features: int
    out_features: int


def _layer_name(key: str) -> str:
    return key.removesuffix(".weight") if key != "weight" else ""


def mlp_chain(states: Sequence[Mapping[str, torch.Tensor]], folders: Sequence[ActivationsFolder]) -> list[ChainLayer]:
    """The models' linear layers in forward order, after checking everything the module docstring lists."""
    order = folders[0].layers
    for folder in folders[1:]:
        if folder.data != folders[0].data:
            raise StatisticsError(f"{folder.path}: activations of data {folder.data!r}, but {folders[0].path} has "
                                  f"{folders[0].data!r}; pleas needs every model's activations on the same rows")
        if folder.layers != order:
            raise IncompatibleModelsError(f"{folder.path}: layers ran in the order {folder.layers}, "
                                          f"but {folders[0].path} has {order}")
    chain = [_chain_layer(states, name) for name in order]
    for folder in folders:
        for layer in chain:
            if folder.calls_per_forward(layer.weight) != 1:
                raise IncompatibleModelsError(f"pleas supports chains of linear layers that each run once per "
                                              f"forward pass; {layer.weight!r} ran {folder.calls_per_forward(layer.weight):g} times")
            if folder.rows(layer.weight) != folders[0].rows(order[0]):
                raise IncompatibleModelsError(f"{folder.path}: {layer.weight!r} saw {folder.rows(layer.weight)} rows, "
                                              f"the first layer {folders[0].rows(order[0])}: not a chain of layers")
    for prev, nxt in itertools.pairwise(chain):
        if prev.out_features != nxt.in_features:
            raise IncompatibleModelsError(f"pleas supports chains of linear layers; {prev.weight!r} has "
                                          f"{prev.out_features} outputs but the next layer {nxt.weight!r} takes {nxt.in_features}")
    known = {key for layer in chain for key in (layer.weight, layer.bias) if key}
    for i, state in enumerate(states):
        extra = sorted(set(state) - known)
        if extra:
            raise IncompatibleModelsError(f"pleas supports MLPs made of linear layers only; model {i} also has "
                                          f"{extra[:3]} (normalisations, embeddings and convolutions are not supported)")
    return chain


def _chain_layer(states: Sequence[Mapping[str, torch.Tensor]], weight: str) -> ChainLayer:
    bias = f"{_layer_name(weight)}.bias" if _layer_name(weight) else "bias"
    for i, state in enumerate(states):
        if weight not in state:
            raise IncompatibleModelsError(f"model {i} has no tensor {weight!r}, which the activations name")
        if state[weight].shape != states[0][weight].shape:
            raise IncompatibleModelsError(f"{weight!r} has shape {list(state[weight].shape)} in model {i} but "
                                          f"{list(states[0][weight].shape)} in model 0")
        if (bias in state) != (bias in states[0]):
            raise IncompatibleModelsError(f"{bias!r} exists in only some of the models")
    out_features, in_features = states[0][weight].shape
    return ChainLayer(weight, bias if bias in states[0] else None, int(in_features), int(out_features))


def check_elementwise(pre: torch.Tensor, post: torch.Tensor, where: str) -> None:
    """Raise unless ``post`` [N, n] is numerically one elementwise function of ``pre`` [N, n] (see above)."""
    p, q = pre.double().reshape(-1), post.double().reshape(-1)
    order = torch.argsort(p, stable=True)
    p, q = p[order], q[order]
    scale = max(float(p.abs().max()), float(q.abs().max()), 1e-30)
    allowed = SLOPE * p.diff() + 1e-4 * scale
    jumps = q.diff().abs() > allowed
    if bool(jumps.any()):
        raise IncompatibleModelsError(
            f"pleas supports linear layers joined by one elementwise activation; the input of {where} is not an "
            "elementwise function of the previous layer's output (a residual connection or a normalisation?)")
