"""DOGE: data-free task arithmetic with a learned, projected correction (Wei et al., ICML 2025).

Task arithmetic with task-adaptive coefficients λ_i = η/‖τ_i‖ plus one shared correction δ, found by
Adam on a data-free proxy of the multi-task loss: each task's "inputs" are stood in for by its own task
vector, L(δ) = Σ_j Σ_rows (Σ_cols τ_j ⊙ (τ_j − Σ_i λ_i (τ_i + δ)))². Each gradient is projected off the
subspace the tasks share (the leading left singular directions of their stacked bases) so that δ
changes what the tasks do not share. Then θ = θ0 + Σ_i λ_i · m_i ⊙ (τ_i + δ), m_i keeping the largest
|τ_i|.

Per tensor, with the closed-form gradient streamed over the models: memory is δ, Adam's two moments,
the gradient and one task vector (plus a length-rows vector per model), not K stacked task vectors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.global_trim import STATS_KEY, GlobalTrimThresholds
from evomerge.merge.operators.selection import rank_window_mask
from evomerge.merge.operators.support import density_spec, output_buffer, per_input, require_base
from evomerge.merge.params import ParamSpec, ResolvedParams

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
"""torch.optim.Adam's defaults, which the reference uses."""


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The 2-D view DOGE works on: [out, everything else]; a vector is one row."""
    return tensor.reshape(tensor.shape[0], -1) if tensor.dim() >= 2 else tensor.reshape(1, -1)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,ij->i", a, b)


def task_coefficients(tensors: Sequence[torch.Tensor], base: torch.Tensor, eta: float) -> list[float]:
    """λ_i = η / ‖τ_i‖ (0 for a zero task vector, which then adds nothing)."""
    norms = [float(torch.linalg.vector_norm(t - base)) for t in tensors]
    return [eta / n if n > 0 else 0.0 for n in norms]


def shared_basis(tensors: Sequence[torch.Tensor], base: torch.Tensor, subspace: int) -> torch.Tensor | None:
    """Orthonormal columns U_s spanning the row space the tasks share (None when it is empty).

    Each nonzero τ_i contributes its ⌊r/K⌋ leading left singular vectors (r = min(m, n)); U_s is the
    ⌊r/subspace⌋ leading left singular vectors of them side by side, the most common directions.
    """
    rows, cols = base.shape
    rank = min(rows, cols)
    per_task = rank // max(1, len(tensors))
    keep = rank // subspace
    if per_task == 0 or keep == 0:
        return None
    blocks = []
    for tensor in tensors:
        task = tensor - base
        if bool(task.any()):
            blocks.append(torch.linalg.svd(task, full_matrices=False)[0][:, :per_task])
    if not blocks:
        return None
    stacked = torch.cat(blocks, dim=1)
    return torch.linalg.svd(stacked, full_matrices=False)[0][:, :keep].contiguous()


class TaskVectorObjective:
    """L(δ) = Σ_j ‖a_j − Λ·rowdot(τ_j, δ)‖² with a_j = rowdot(τ_j, τ_j − Σ_i λ_i τ_i) and Λ = Σ_i λ_i.

    That is the reference's loss expanded; its gradient −2Λ Σ_j e_j ⊙_rows τ_j (e_j the bracket) needs
    one task vector at a time, recomputed from the inputs into a scratch buffer.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, lambdas: Sequence[float]) -> None:
        self.tensors, self.base, self.lambdas = list(tensors), base, list(lambdas)
        self.total = sum(self.lambdas)
        self._task = torch.empty_like(base)
        combined = torch.zeros_like(base)
        for i, lam in enumerate(self.lambdas):
            combined.add_(self.task(i), alpha=lam)
        self.offsets = []
        for j in range(len(self.tensors)):
            task = self.task(j)
            self.offsets.append(row_dot(task, task) - row_dot(task, combined))

    def task(self, j: int) -> torch.Tensor:
        """τ_j in the shared scratch buffer (valid until the next call)."""
        return torch.sub(self.tensors[j], self.base, out=self._task)

    def residual(self, j: int, delta: torch.Tensor) -> torch.Tensor:
        return self.offsets[j] - self.total * row_dot(self.task(j), delta)

    def value(self, delta: torch.Tensor) -> float:
        return sum(float(torch.linalg.vector_norm(self.residual(j, delta))) ** 2 for j in range(len(self.tensors)))

    def gradient(self, delta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        out.zero_()
        for j in range(len(self.tensors)):
            residual = self.residual(j, delta)
            out.addcmul_(self._task, residual.unsqueeze(1))
        return out.mul_(-2 * self.total)


def optimise_delta(
    objective: TaskVectorObjective, basis: torch.Tensor | None, steps: int, lr: float
) -> torch.Tensor:
    """δ after ``steps`` Adam steps from 0, each gradient projected off span(``basis``): g − U_s U_sᵀ g."""
    delta = torch.zeros_like(objective.base)
    grad, denom = torch.empty_like(delta), torch.empty_like(delta)
    first, second = torch.zeros_like(delta), torch.zeros_like(delta)
    beta1, beta2 = ADAM_BETAS
    for step in range(1, steps + 1):
        objective.gradient(delta, grad)
        if basis is not None:
            grad.addmm_(basis, basis.T @ grad, alpha=-1)
        first.mul_(beta1).add_(grad, alpha=1 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(second, out=denom).div_(math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
        delta.addcdiv_(first, denom, value=-lr / (1 - beta1**step))
    return delta


def _global_trim(params: ResolvedParams) -> bool:
    return bool(params["trim_scope"] == "global")


@operator(
    "doge",
    params=(
        ParamSpec("eta", float, default=0.07, low=0.0, low_open=True,
                  doc="η: task i's coefficient is λ_i = η/‖τ_i‖ in each tensor (the reference's `lamda`)"),
        ParamSpec("subspace", int, default=6, low=1,
                  doc="the shared subspace keeps ⌊r/subspace⌋ directions, r = min(rows, columns)"),
        density_spec(0.3, mergekit_default=0.3,
                     doc="fraction of each task vector kept, by |τ_i|, in the final sum (the reference's K = 30)"),
        ParamSpec("trim_scope", str, default="global", choices=("global", "tensor"),
                  doc="the density's top-|τ_i| over every tensor doge merges (the reference) or per tensor"),
        ParamSpec("steps", int, default=400, low=0, doc="Adam steps on δ per tensor"),
        ParamSpec("lr", float, default=1e-4, low=0.0, doc="Adam's learning rate"),
    ),
    base="required",
    global_pass=functools.partial(GlobalTrimThresholds, "doge"),
    needs_global_pass=_global_trim,
    reference="Wei et al., Modeling Multi-Task Model Merging as Adaptive Projective Gradient Descent, "
    "ICML 2025 (arXiv 2501.01230)",
)
def doge(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + Σ_i λ_i · m_i ⊙ (τ_i + δ), λ_i = η/‖τ_i‖ (Wei et al., 2025).

    δ: ``steps`` Adam steps (lr ``lr``) on Σ_j Σ_rows (Σ_cols τ_j ⊙ (τ_j − Σ_i λ_i (τ_i + δ)))² from
    δ = 0 (task arithmetic), each gradient projected off the shared subspace (``shared_basis``). m_i
    keeps the top-``density`` |τ_i|, over every doge tensor (``trim_scope: global``) or per tensor.
    A tensor is seen as [rows, rest]. The reference applies DOGE only to the encoder's weight matrices
    and leaves all else at θ0; λ_i gives each task an update of norm ~η in every tensor, so merge small
    tensors (norms, biases) with another method through an override.
    """
    base = require_base(inputs, "doge")
    densities = per_input(inputs, params, "density")
    out = output_buffer(inputs, base)
    out.copy_(base)
    if base.numel() == 0 or not inputs.tensors:
        return out
    rows_base = as_rows(base)
    tensors = [as_rows(t) for t in inputs.tensors]
    lambdas = task_coefficients(tensors, rows_base, float(params["eta"]))
    objective = TaskVectorObjective(tensors, rows_base, lambdas)
    basis = shared_basis(tensors, rows_base, int(params["subspace"]))
    delta = optimise_delta(objective, basis, int(params["steps"]), float(params["lr"])).view(base.shape)
    thresholds = _thresholds(inputs, params)
    task = torch.empty_like(base)
    for i, lam in enumerate(lambdas):
        if lam == 0:
            continue
        torch.sub(inputs.tensors[i], base, out=task)
        keep = _keep_mask(task, densities[i], None if thresholds is None else thresholds[i])
        out.add_(task.add_(delta).mul_(keep), alpha=lam)
    return out


def _thresholds(inputs: MergeInputs, params: ResolvedParams) -> list[float] | None:
    if not _global_trim(params):
        return None
    if STATS_KEY not in inputs.stats:
        raise RuntimeError(f"doge: global trim needs the whole-model pass, which did not run for {inputs.name}")
    return list(inputs.stats[STATS_KEY])


def _keep_mask(task: torch.Tensor, density: float, threshold: float | None) -> torch.Tensor:
    """m_i from |τ_i| (before δ, as the reference): ≥ the whole-model threshold, or the tensor's top-k."""
    if density >= 1:
        return torch.ones_like(task, dtype=torch.bool)
    if threshold is not None:
        return task.abs() >= threshold
    n = task.numel()
    k = max(1, int(density * n))
    return rank_window_mask(task.abs(), n - k, n)
