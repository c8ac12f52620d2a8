"""The partially merged layer: its starting weights, its allowed blocks, its inputs and its targets.

Given how the units on a linear layer's input side and output side are grouped (``UnitGroups``), the merged
layer's weight is a block matrix (PLeaS §3.2, for K models):

==================  =========================  ==========================  ==================
rows \\ columns      merged inputs              model j's kept inputs       bias
==================  =========================  ==========================  ==================
merged outputs      mean_k W_k[o_k, i_k]       W_j[o_j, kept_j] / K        mean_k b_k[o_k]
model k's kept      W_k[kept_k, i_k]           W_k[kept_k, kept_k] if j=k  b_k[kept_k]
outputs                                        else 0 (never trained)
==================  =========================  ==========================  ==================

Model k's kept outputs never read another model's kept inputs: those blocks stay zero, so units kept apart
stay separate paths. The least-squares step (``lstsq``) refits every other block to the inputs and
targets built here from the *original* models' activations on the same rows: a merged input is the mean of
the matched units' activations, a merged target the mean of the matched units' pre-activations, and a
kept unit keeps its own model's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from evomerge.merge.pleas.matching import UnitGroups


@dataclass(frozen=True)
class RowBlock:
    """Output rows of the merged layer that share one set of allowed input columns (bias column last)."""

    rows: slice
    columns: torch.Tensor


def gather(per_model: Sequence[torch.Tensor], groups: UnitGroups) -> torch.Tensor:
    """Columns of the merged layer from per-model [N, n] values: merged units averaged, kept ones copied."""
    merged = torch.stack([t[:, groups.merged[:, k]] for k, t in enumerate(per_model)]).mean(0)
    return torch.cat([merged, *(t[:, groups.kept[k]] for k, t in enumerate(per_model))], dim=1)


def initial_weight(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], ins: UnitGroups,
                   outs: UnitGroups) -> torch.Tensor:
    """The merged layer's starting [out, in + 1] weight (bias as the last column), per the table above."""
    n_models = len(weights)
    out = torch.zeros(outs.width, ins.width + 1, dtype=weights[0].dtype)
    m_in, m_out = ins.n_merged, outs.n_merged
    for k, (w, b) in enumerate(zip(weights, biases)):
        mi, ki, mo, ko = ins.merged[:, k], ins.kept[k], outs.merged[:, k], outs.kept[k]
        out[:m_out, :m_in] += w[mo][:, mi] / n_models
        out[:m_out, ins.kept_slice(k)] = w[mo][:, ki] / n_models
        out[:m_out, -1] += b[mo] / n_models
        rows = outs.kept_slice(k)
        out[rows, :m_in] = w[ko][:, mi]
        out[rows, ins.kept_slice(k)] = w[ko][:, ki]
        out[rows, -1] = b[ko]
    return out


def row_blocks(ins: UnitGroups, outs: UnitGroups, with_bias: bool = True) -> list[RowBlock]:
    """The rows that share allowed columns: merged outputs read everything, model k's kept outputs read
    the merged inputs, model k's kept inputs and the bias (when the layer has one)."""
    bias = torch.tensor([ins.width]) if with_bias else torch.zeros(0, dtype=torch.long)
    everything = torch.cat([torch.arange(ins.width), bias])
    blocks = [RowBlock(slice(0, outs.n_merged), everything)] if outs.n_merged else []
    merged_cols = torch.arange(ins.n_merged)
    for k in range(outs.n_models):
        rows = outs.kept_slice(k)
        if rows.stop > rows.start:
            own = torch.arange(ins.kept_slice(k).start, ins.kept_slice(k).stop)
            blocks.append(RowBlock(rows, torch.cat([merged_cols, own, bias])))
    return blocks
