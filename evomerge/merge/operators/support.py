"""Small checks and parameter declarations shared by the built-in operators.

The engine guarantees the input contract (a base where the policy requires one, a generator for randomized
operators); these helpers turn a broken guarantee into a clear message instead of an ``AttributeError``
deep inside the math, and declare the parameters that several operators spell the same way (mergekit's
names, so mergekit recipes keep working).
"""

from __future__ import annotations

from typing import Any

import torch

from evomerge.merge.operator import MergeInputs
from evomerge.merge.params import REQUIRED, SAME, ParamSpec, ResolvedParams, Scope


def require_base(inputs: MergeInputs, method: str) -> torch.Tensor:
    if inputs.base is None:
        raise RuntimeError(f"{method}: the engine passed no base tensor for {inputs.name}")
    return inputs.base


def require_generator(inputs: MergeInputs, method: str) -> torch.Generator:
    if inputs.generator is None:
        raise RuntimeError(f"{method}: randomized operator called without a generator for {inputs.name}")
    return inputs.generator


def output_buffer(inputs: MergeInputs, like: torch.Tensor) -> torch.Tensor:
    """``inputs.out`` when it fits a result shaped like ``like``, else a fresh buffer."""
    out = inputs.out
    if (
        out is not None
        and out.shape == like.shape
        and out.dtype == like.dtype
        and out.device == like.device
        and out.is_contiguous()
    ):
        return out
    return torch.empty_like(like, memory_format=torch.contiguous_format)


def per_input(inputs: MergeInputs, params: ResolvedParams, name: str) -> list[Any]:
    """The per-model values of ``name``, checked to line up with ``inputs.tensors``."""
    values = list(params.model(name))
    if len(values) != len(inputs.tensors):
        raise RuntimeError(
            f"parameter {name!r} has {len(values)} values for {len(inputs.tensors)} inputs at {inputs.name}"
        )
    return values


def weight_spec(scope: Scope = "model", default: Any = 1.0, mergekit_default: Any = REQUIRED) -> ParamSpec:
    """Per-model weight: 1 by default in evomerge recipes, mandatory in mergekit's (as mergekit has it,
    except for its methods that take no weights at all)."""
    return ParamSpec("weight", float, scope=scope, default=default, mergekit_default=mergekit_default,
                     doc="weight w_i of each model")


def density_spec(
    default: float, mergekit_default: Any = 1.0, doc: str = "", *, zero_allowed: bool = False
) -> ParamSpec:
    """``density`` in (0, 1], or [0, 1] where keeping nothing is meaningful (the curvature masks: the base)."""
    return ParamSpec(
        "density",
        float,
        scope="model",
        default=default,
        mergekit_default=mergekit_default,
        low=0.0,
        low_open=not zero_allowed,
        high=1.0,
        doc=doc or "fraction d of each task vector's entries that is kept",
    )


LAMBDA = ParamSpec("lambda", float, default=1.0, doc="λ, scale of the merged task vector")
INT8_MASK = ParamSpec("int8_mask", bool, default=False, doc="accepted for mergekit recipes; has no effect")


def normalize_spec(default: bool, mergekit_default: Any = SAME) -> ParamSpec:
    return ParamSpec(
        "normalize",
        bool,
        default=default,
        mergekit_default=mergekit_default,
        doc="divide the merged task vector by the sum of the weights that contributed to each entry",
    )


RESCALE_DROP = ParamSpec(
    "rescale", bool, default=True, doc="rescale the entries that survive the random drop"
)
RESCALE_TRIM = ParamSpec(
    "rescale",
    bool,
    default=False,
    doc="scale each trimmed task vector back to its untrimmed L1 norm (mergekit)",
)
RESCALE_MODE = ParamSpec(
    "rescale_mode",
    str,
    default="keep_probability",
    mergekit_default="l1",
    choices=("keep_probability", "l1"),
    doc="keep_probability: divide each kept entry by its keep probability (the papers); "
    "l1: match the L1 norm of the undropped task vector (mergekit)",
)
