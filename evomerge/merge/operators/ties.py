"""TIES-Merging: trim, elect sign, disjoint merge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.chunks import span_size
from evomerge.merge.operators.global_trim import STATS_KEY, GlobalTrimThresholds
from evomerge.merge.operators.sparsify import Rescale, trim_below, trim_to_top
from evomerge.merge.operators.support import (
    INT8_MASK,
    LAMBDA,
    RESCALE_TRIM,
    density_spec,
    normalize_spec,
    output_buffer,
    per_input,
    require_base,
    weight_spec,
)
from evomerge.merge.operators.task_vectors import Sparsifier, merge_task_vectors
from evomerge.merge.operators.ties_stream import ties_stream
from evomerge.merge.operators.trim_rules import KEEP_ALL, TrimRule, tensor_trim_rules
from evomerge.merge.params import ParamSpec, ResolvedParams

TRIM_SCOPE = ParamSpec(
    "trim_scope",
    str,
    default="global",
    mergekit_default="tensor",
    choices=("global", "tensor"),
    doc="global: keep the top-d of each task vector over the whole model (paper); tensor: per tensor (mergekit)",
)
ZERO_SIGN = ParamSpec(
    "zero_sign",
    str,
    default="majority",
    mergekit_default="positive",
    choices=("majority", "positive"),
    doc="elected sign where the trimmed task vectors sum to exactly 0: the tensor's majority sign "
    "(the TIES authors' code) or + (mergekit)",
)


def _needs_thresholds(params: ResolvedParams) -> bool:
    return bool(params["trim_scope"] == "global")


@operator(
    "ties",
    params=(
        weight_spec(),
        density_spec(0.2, doc="fraction d of each task vector kept by magnitude (the paper's k = 20%)"),
        LAMBDA,
        normalize_spec(True),
        TRIM_SCOPE,
        ZERO_SIGN,
        RESCALE_TRIM,
        INT8_MASK,
    ),
    base="required",
    global_pass=GlobalTrimThresholds,
    needs_global_pass=_needs_thresholds,
    reference="Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023 (arXiv 2306.01708)",
)
def ties(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """TIES-Merging (Yadav et al., 2023): θ = θ0 + λ · Σ_{i∈A} w_i τ̂_i / Σ_{i∈A} w_i.

    1. Trim: τ̂_i keeps the d-fraction of τ_i = θ_i − θ0 largest in magnitude, over the whole model
       (``trim_scope: global``, the paper) or per tensor (``tensor``, mergekit);
    2. elect: γ = sign(Σ_i w_i τ̂_i) per entry (``zero_sign`` resolves an exact 0);
    3. disjoint merge over A = {i : sign(w_i τ̂_i) = γ}: the mean with ``normalize`` (the paper), else the sum.
    The global trim keeps every entry at least as large as the exact k-th largest, k = int(d·N).
    """
    densities = per_input(inputs, params, "density")
    thresholds: list[float] | None = None
    if params["trim_scope"] == "global":
        if STATS_KEY not in inputs.stats:
            raise RuntimeError(
                f"ties: global trim needs the whole-model pass, which did not run for {inputs.name}"
            )
        thresholds = inputs.stats[STATS_KEY]
    if _streams(inputs, params):
        return _ties_streamed(inputs, params, densities, thresholds)
    rescale: Rescale = "l1" if params["rescale"] else None
    sparsify: Sparsifier
    if thresholds is not None:
        global_thresholds = thresholds

        def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
            return delta if densities[i] >= 1 else trim_below(delta, global_thresholds[i], rescale)
    else:

        def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
            return trim_to_top(delta, densities[i], rescale)

    return merge_task_vectors(
        inputs, params, method="ties", sparsify=sparsify, sign_consensus=True, zero_sign=params["zero_sign"]
    )


def _streams(inputs: MergeInputs, params: ResolvedParams) -> bool:
    """The span-streamed kernel covers float32 weights without the L1 rescale (which needs each trimmed
    task vector's norm before the election); anything else takes the whole-tensor path."""
    base = require_base(inputs, "ties")
    return (
        bool(inputs.tensors)
        and not params["rescale"]
        and all(t.dtype == torch.float32 and t.device == base.device for t in (base, *inputs.tensors))
    )


def _ties_streamed(
    inputs: MergeInputs, params: ResolvedParams, densities: list[float], thresholds: list[float] | None
) -> torch.Tensor:
    base = require_base(inputs, "ties")
    chunk = span_size(base)
    rules: list[TrimRule]
    if thresholds is not None:  # whole-model trim: keep |τ_i| ≥ t_i, ties included
        rules = [KEEP_ALL if d >= 1 else TrimRule(float(t)) for d, t in zip(densities, thresholds)]
    else:
        rules = tensor_trim_rules(inputs.tensors, base, densities, chunk)
    weights = per_input(inputs, params, "weight")
    out = output_buffer(inputs, base)
    if base.device.type == "cpu":
        return _ties_compiled(inputs.tensors, base, weights, rules, params, out)
    return ties_stream(
        inputs.tensors,
        base,
        weights,
        rules,
        zero_sign=params["zero_sign"],
        normalize=bool(params["normalize"]),
        scale=float(params["lambda"]),
        out=out,
        chunk=chunk,
    )


def _ties_compiled(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, weights: list[float], rules: list[TrimRule],
    params: ResolvedParams, out: torch.Tensor,
) -> torch.Tensor:
    """The CPU merge pass as one compiled loop per thread (``ties_kernels.py``), same numbers as ``ties_stream``."""
    from evomerge.merge.operators import ties_kernels  # numba: imported only when a CPU TIES merge runs

    empty = np.empty(0, np.int64)
    ties_kernels.merge(
        ties_kernels.as_arrays(tensors),
        ties_kernels.as_arrays([base])[0],
        weights,
        [rule.value for rule in rules],
        [rule.drops.numpy() if rule.drops is not None else empty for rule in rules],
        zero_sign=params["zero_sign"],
        normalize=bool(params["normalize"]),
        scale=float(params["lambda"]),
        out=out.view(-1).numpy(),
    )
    return out
