"""Metrics-weighted averaging of checkpoints from one training run."""

from __future__ import annotations

import math

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.linear import weighted_sum
from evomerge.merge.operators.support import output_buffer, per_input
from evomerge.merge.params import ParamSpec, ResolvedParams


def metric_weights(metrics: list[float], metric_type: str, penalty: float) -> list[float]:
    """w_i = M_i^p / Σ_j M_j^p with M_i = 1/L_i (loss) or s_i (step), computed in log space."""
    logs = [(-1.0 if metric_type == "loss" else 1.0) * penalty * math.log(m) for m in metrics]
    top = max(logs)
    unnormalised = [math.exp(v - top) for v in logs]
    total = sum(unnormalised)
    return [u / total for u in unnormalised]


@operator(
    "mwa",
    params=(
        ParamSpec(
            "metric",
            float,
            scope="model",
            low=0.0,
            low_open=True,
            doc="the checkpoint's training loss or step",
        ),
        ParamSpec("metric_type", str, default="loss", choices=("loss", "step"), doc="what ``metric`` holds"),
        ParamSpec(
            "penalty", float, default=1.0, low=0.0, doc="penalty factor p; 0 gives the uniform average"
        ),
    ),
    base="forbidden",
    reference="Yu & Choi, Parameter-Efficient Checkpoint Merging via Metrics-Weighted Averaging (arXiv 2504.18580)",
)
def mwa(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = Σ_i w_i θ_i with w_i = M_i^p / Σ_j M_j^p, M_i = 1/L_i (``metric_type: loss``) or the step s_i.

    Metrics-Weighted Averaging (Yu & Choi, 2025) of checkpoints of one (PEFT) run; larger p concentrates
    the weight on low-loss or late checkpoints. **The formula is reconstructed from the paper's abstract**
    ("a penalty factor ... one hyperparameter regardless of the number of checkpoints"); check §3 of
    arXiv 2504.18580 before relying on the exact weighting or on the default p = 1.
    """
    metrics = per_input(inputs, params, "metric")
    weights = metric_weights(metrics, params["metric_type"], float(params["penalty"]))
    return weighted_sum(inputs.tensors, weights, out=output_buffer(inputs, inputs.tensors[0]))
