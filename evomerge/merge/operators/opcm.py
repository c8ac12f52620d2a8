"""OPCM: continual merging by orthogonal projection (Tang et al., 2025).

Models arrive one at a time. Each new task vector τ_t = θ_t − θ0 loses its components in the subspace of
the merged update so far, D_{t−1}, before it is added: D_t = D_{t−1} + τ̃_t (D_1 = τ_1). The merged model
is θ0 + D_t / λ_t with λ_t = ‖D_t‖ / mean_{s≤t} ‖τ_s‖, so the merged update keeps the average task-vector
norm. The projection only uses D_{t−1}'s singular vectors and the share of its singular values, both
blind to scale, so the intermediate λ_s cancel and the final merge needs only D_K and the norms.

Memory never depends on how many models were merged: the running D, one task vector and the SVD
workspace of one tensor. ``opcm`` (the operator) consumes its inputs in recipe order, one at a time;
:class:`ContinualMerger` is the same algorithm for models that arrive over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import MergeInputs, operator
from evomerge.merge.operators.support import output_buffer, require_base
from evomerge.merge.params import ParamSpec, ResolvedParams

ALPHA = ParamSpec(
    "alpha", float, default=0.5, low=0.0, high=1.0,
    doc="share α of D's singular-value sum whose leading directions form the dominant block τ loses whole",
)
SCALING = ParamSpec(
    "scaling", str, default="global", choices=("global", "tensor"),
    doc="norms behind λ_t: over every tensor opcm merges (the paper; one extra pass) or per tensor",
)
PROJECT = ParamSpec(
    "project", bool, default=True,
    doc="project 2-D tensors (false: the plain sum, as for vectors); set per tensor with a filter",
)
STATS_KEY = "opcm_scale"


def orthogonal_residual_(task: torch.Tensor, update: torch.Tensor, alpha: float) -> torch.Tensor:
    """Remove from ``task`` (in place) its components in the subspace of the 2-D ``update``.

    With update = Σ_i s_i u_i v_iᵀ (numerical rank k) and P_ij = u_iᵀ task v_j, it subtracts P_ii u_i v_iᵀ
    for every i < k and P_ij u_i v_jᵀ for i, j < r_α, where r_α counts the leading directions whose
    cumulative share of Σ s stays ≤ α. These rank-1 matrices are orthonormal, so the result is the
    Frobenius-orthogonal projection off them (it is orthogonal to ``update`` itself). The reference
    code also zeroes P_ii where s_i = 0, directions that LAPACK picks arbitrarily; they are kept here.
    """
    if update.numel() == 0:
        return task
    u, s, vh = torch.linalg.svd(update, full_matrices=False)
    if not bool(s[0] > 0):
        return task  # nothing merged yet in this tensor: no subspace to avoid
    tolerance = float(s[0]) * max(update.shape) * torch.finfo(s.dtype).eps
    rank = int((s > tolerance).sum())
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    share = torch.cumsum(s, 0) / s.sum()
    block = rank if alpha >= 1 else int((share <= alpha).sum())
    along = task @ vh.T  # column j: task v_j
    diagonal = (u * along).sum(0)  # P_ii
    if block > 1:
        dominant = u[:, :block].T @ along[:, :block]  # P_ij, i, j < r_α (its diagonal included)
        task.addmm_(u[:, :block] @ dominant, vh[:block], alpha=-1)
        u, vh, diagonal = u[:, block:], vh[block:], diagonal[block:]
    return task.addmm_(u * diagonal, vh, alpha=-1)


def continual_update(
    tensors: Iterable[torch.Tensor], base: torch.Tensor, alpha: float, project: bool, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[float]]:
    """D_K = Σ_t τ̃_t over ``tensors`` in order (one at a time) and every ‖τ_t‖²."""
    merged = torch.zeros_like(base) if out is None else out.zero_()
    task = torch.empty_like(base)
    squares: list[float] = []
    for t, tensor in enumerate(tensors):
        torch.sub(tensor, base, out=task)
        squares.append(float(torch.linalg.vector_norm(task)) ** 2)
        if t > 0 and project and base.dim() == 2:
            orthogonal_residual_(task, merged, alpha)
        merged.add_(task)
    return merged, squares


def norm_ratio(task_squares: Iterable[float], merged_square: float) -> float:
    """1/λ = mean_t ‖τ_t‖ / ‖D‖ (1 where either is 0: nothing to rescale)."""
    norms = [math.sqrt(q) for q in task_squares]
    if not norms or merged_square <= 0 or sum(norms) <= 0:
        return 1.0
    return (sum(norms) / len(norms)) / math.sqrt(merged_square)


class OpcmNorms:
    """GlobalPass: the whole-model 1/λ_K for the tensors with ``scaling: global``.

    It runs every tensor's projections once to measure the norms, and the merge runs them again: keeping
    each D_K until the merge pass would cost a second model's worth of memory, which OPCM exists to avoid."""

    n_passes = 1

    def __init__(self) -> None:
        self._task_squares: list[float] = []
        self._merged_square = 0.0

    def start(self, n_models: int) -> None:
        self._task_squares = [0.0] * n_models
        self._merged_square = 0.0

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None:
        if params["scaling"] != "global":
            return
        base = require_base(inputs, "opcm")
        merged, squares = continual_update(inputs.tensors, base, params["alpha"], params["project"])
        for i, q in enumerate(squares):
            self._task_squares[i] += q
        self._merged_square += float(torch.linalg.vector_norm(merged)) ** 2

    def end_pass(self, pass_index: int) -> None:
        pass

    def finish(self) -> dict[str, Any]:
        return {STATS_KEY: norm_ratio(self._task_squares, self._merged_square)}


def _global(params: ResolvedParams) -> bool:
    return bool(params["scaling"] == "global")


@operator(
    "opcm",
    params=(ALPHA, SCALING, PROJECT),
    base="required",
    streams_inputs=True,
    global_pass=OpcmNorms,
    needs_global_pass=_global,
    reference="Tang et al., Merging Models on the Fly Without Retraining: A Sequential Approach to Scalable "
    "Continual Model Merging, NeurIPS 2025 (arXiv 2501.09522)",
)
def opcm(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """θ = θ0 + D_K / λ_K, D_t = D_{t−1} + τ̃_t, λ_K = ‖D_K‖ / mean_t ‖τ_t‖ (Tang et al., 2025).

    The inputs arrive in recipe order; τ̃_t is τ_t = θ_t − θ0 projected off D_{t−1}'s singular pairs and
    off its dominant α-block (``orthogonal_residual_``) for 2-D tensors, τ_t itself for the others. The
    norms are over every tensor opcm merges (``scaling: global``, the paper) or this tensor's. One model
    gives that model. Memory: D, one task vector and one SVD, whatever the number of models.
    """
    base = require_base(inputs, "opcm")
    out = output_buffer(inputs, base)
    merged, squares = continual_update(inputs.tensors, base, params["alpha"], params["project"], out)
    if _global(params):
        if STATS_KEY not in inputs.stats:
            raise RuntimeError(f"opcm: global scaling needs the whole-model pass, which did not run for {inputs.name}")
        ratio = float(inputs.stats[STATS_KEY])
    else:
        ratio = norm_ratio(squares, float(torch.linalg.vector_norm(merged)) ** 2)
    return merged.mul_(ratio).add_(base)


class ContinualMerger:
    """OPCM for models that arrive over time: ``add`` one state dict after another.

    Holds θ0 (the caller's tensors, never modified), its own merged state and, during ``add``, one
    tensor's task vector and SVD: memory does not grow with the number of models added. After each
    ``add``, :meth:`state_dict` is θ0 + D_t / λ_t, the same weights ``opcm`` gives for those models.
    """

    def __init__(
        self,
        base: Mapping[str, torch.Tensor],
        *,
        alpha: float = 0.5,
        scaling: str = "global",
        project: Callable[[str], bool] | None = None,
    ) -> None:
        ALPHA.check_range(ALPHA.cast(alpha))
        self.alpha = float(alpha)
        self.scaling = SCALING.cast(scaling)
        self._project = project or (lambda name: True)
        self._base = dict(base)
        self._merged: dict[str, torch.Tensor] = {}
        self._norm_sums: dict[str, float] = {}
        """Σ_s ‖τ_s‖ per scale group (one group, "", with global scaling; else one per tensor)."""
        self._lambdas: dict[str, float] = {}
        self.steps = 0

    def _group(self, name: str) -> str:
        return name if self.scaling == "tensor" else ""

    def _check(self, model: Mapping[str, torch.Tensor]) -> None:
        for name, base in self._base.items():
            if name not in model:
                raise ConfigError(f"model #{self.steps + 1} has no tensor {name!r}")
            if tuple(model[name].shape) != tuple(base.shape):
                raise ConfigError(
                    f"model #{self.steps + 1}: {name!r} has shape {list(model[name].shape)}, the base {list(base.shape)}"
                )

    def add(self, model: Mapping[str, torch.Tensor]) -> None:
        """Merge one more model (validated first: a rejected model leaves the merged state untouched)."""
        self._check(model)
        task_squares: dict[str, float] = {}
        merged_squares: dict[str, float] = {}
        for name, base_tensor in self._base.items():
            if not base_tensor.is_floating_point():
                continue
            dtype = torch.float64 if base_tensor.dtype == torch.float64 else torch.float32
            base = base_tensor.to(dtype)
            task = torch.sub(model[name].to(dtype), base)
            group = self._group(name)
            task_squares[group] = task_squares.get(group, 0.0) + float(torch.linalg.vector_norm(task)) ** 2
            if self.steps == 0:
                update = self._merged[name] = task  # D_1 = τ_1
            else:
                update = self._merged[name].sub_(base).mul_(self._lambdas[group])  # D_{t−1}
                if base.dim() == 2 and self._project(name):
                    orthogonal_residual_(task, update, self.alpha)
                update.add_(task)
            merged_squares[group] = merged_squares.get(group, 0.0) + float(torch.linalg.vector_norm(update)) ** 2
        self.steps += 1
        for group, square in task_squares.items():
            self._norm_sums[group] = self._norm_sums.get(group, 0.0) + math.sqrt(square)
            mean_norm = self._norm_sums[group] / self.steps
            ratio = norm_ratio([mean_norm**2], merged_squares[group])
            self._lambdas[group] = 1.0 / ratio
        for name, update in self._merged.items():
            update.div_(self._lambdas[self._group(name)]).add_(self._base[name].to(update.dtype))

    @property
    def lambda_t(self) -> float:
        """λ_t of the latest step (with global scaling; per-tensor values are in :attr:`lambdas`)."""
        return self._lambdas.get("", 1.0)

    @property
    def lambdas(self) -> dict[str, float]:
        return dict(self._lambdas)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The merged model (its float tensors are this merger's own, updated in place by ``add``)."""
        return {name: self._merged.get(name, base) for name, base in self._base.items()}
