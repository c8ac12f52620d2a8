"""Weighted averaging of whole weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.chunks import flat, span_size, spans
from evomerge.merge.operators.support import output_buffer, per_input, weight_spec
from evomerge.merge.params import ParamSpec, ResolvedParams

WEIGHT_SUM_EPS = 1e-12


def weighted_sum(
    tensors: Sequence[torch.Tensor], weights: list[float], divisor: float = 1.0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_i w_i x_i / divisor, into ``out`` (when given), span by span.

    Each span of the result is accumulated while it sits in the cache, so the inputs are read once and
    the output is written once (whole-tensor adds would read and write the full output once per input).
    """
    first = tensors[0]
    result = out if out is not None else torch.empty_like(first, memory_format=torch.contiguous_format)
    flats, target = [flat(t) for t in tensors], flat(result)
    for start, stop in spans(first.numel(), span_size(first)):
        acc = torch.mul(flats[0][start:stop], float(weights[0]), out=target[start:stop])
        for x, w in zip(flats[1:], weights[1:]):
            acc.add_(x[start:stop], alpha=float(w))
        if divisor != 1:
            acc.div_(divisor)
    return result


@operator(
    "linear",
    params=(
        weight_spec("input", default=1.0),
        ParamSpec("normalize", bool, default=True, doc="divide by the sum of the weights"),
    ),
    base="ignored",
    reference="Wortsman et al., Model soups, ICML 2022 (arXiv 2203.05482)",
)
def linear(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Weighted average θ = Σ_i w_i θ_i / Σ_i w_i (``normalize: false`` drops the division).

    Model soups (Wortsman et al., 2022). A base model, when given, is one more input with its own weight.
    """
    weights = per_input(inputs, params, "weight")
    total = 1.0
    if params["normalize"]:
        total = sum(weights)
        if abs(total) < WEIGHT_SUM_EPS:
            raise ConfigError(
                f"parameter 'weight' sums to zero at {inputs.name}; cannot normalise (set normalize: false)"
            )
    return weighted_sum(inputs.tensors, weights, total, output_buffer(inputs, inputs.tensors[0]))
