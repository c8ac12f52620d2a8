"""FW-Merging: Frank-Wolfe descent of a data objective over the convex hull of a pool of checkpoints.

Chen et al., FW-Merging: Scaling Model Merging with Frank-Wolfe Optimization, 2025 (arXiv 2503.12649).
The merge minimises f(θ), a loss on calibration data, over the hull of the pool θ_1..θ_K (with
``granularity: layer`` over the product of every tensor's own hull). Iteration t:

1. g = ∇f(θ_t) (one backward pass per calibration batch);
2. linear minimisation: s = the pool member of lowest score, per tensor or for the whole model. ``cosine``
   (the authors' code and FusionBench) scores cos(g_p, θ_{m,p}); ``inner`` scores ⟨g_p, θ_{m,p} − θ_{t,p}⟩,
   the textbook oracle, for which −Σ_p ⟨g_p, s_p − θ_{t,p}⟩ is the Frank-Wolfe duality gap. The initial
   merge θ_0 is one more member (``include_initial``, as in the authors' code);
3. θ_{t+1} = θ_t + λγ_t (s − θ_t) with γ_t = min(1, η·2/(t+2)): the step from θ_t of the authors' code
   (FusionBench's docs write θ0 instead).

A tensor whose best member is no descent direction (⟨g_p, s_p − θ_{t,p}⟩ ≥ 0) stays where it is; the
authors' code moves it towards zero instead. The gradient couples every tensor through the data, so this is
a model-level merge, not a per-tensor operator. Memory is constant in K: θ_t, g, the best candidate per
tensor (and θ_0 when it is a member), and one pool member at a time, whose tensors are memory-mapped from
its checkpoint folder and dropped after use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.io.checkpoint import Checkpoint

Source = Mapping[str, torch.Tensor] | str | os.PathLike[str]
"""A model: its tensors in memory, or a checkpoint folder read one memory-mapped tensor at a time."""
Objective = Callable[[Mapping[str, torch.Tensor]], torch.Tensor | Iterable[torch.Tensor]]
"""The weights (merged tensors require grad) → the loss, or loss terms whose sum is the loss (one per
calibration batch, so that each batch's graph is freed by its own backward pass)."""
STAY = "stay"
INITIAL = "initial"


class FrankWolfeSettings(BaseModel):
    """The knobs of FW-Merging (defaults: classic Frank-Wolfe steps on the authors' layer-wise oracle)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_iters: int = Field(10, ge=1)
    step_size: float = Field(1.0, gt=0)
    """η in γ_t = η·2/(t+2) (FusionBench: 0.1; the authors: 1)."""
    scaling: float = Field(1.0, gt=0, le=1)
    """λ, a factor on every step (FusionBench: 0.3)."""
    granularity: Literal["layer", "model"] = "layer"
    score: Literal["cosine", "inner"] = "cosine"
    init: Literal["task_arithmetic", "base", "average"] = "task_arithmetic"
    init_scaling: float = Field(0.3, ge=0)
    """λ of the task-arithmetic initial merge θ0 + λ Σ_m τ_m (FusionBench's default)."""
    include_initial: bool = True
    tolerance: float = Field(0.0, ge=0)
    """Stop once the decrease the linearisation promises, −Σ_p ⟨g_p, s_p − θ_p⟩, is at most this."""


def settings_from_parameters(parameters: Mapping[str, Any], path: str = "parameters") -> FrankWolfeSettings:
    """Settings from a recipe's parameters; a bad field is a ConfigError naming it."""
    try:
        return FrankWolfeSettings.model_validate(dict(parameters))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], f"{path}.{where}" if where else path) from None


@dataclass
class FrankWolfeResult:
    weights: dict[str, torch.Tensor]
    """Every tensor of the base: the merged ones, and the others as the base has them."""
    losses: list[float] = field(default_factory=list)
    """f(θ_t) for t = 0, 1, ..., the last one after the final step."""
    gaps: list[float] = field(default_factory=list)
    choices: list[dict[str, str]] = field(default_factory=list)
    """Per iteration, tensor → the member stepped towards (its label, ``initial``, or ``stay``)."""


class _Member:
    """One model of the pool, read tensor by tensor."""

    def __init__(self, source: Source, label: str) -> None:
        self.label = label
        if isinstance(source, Mapping):
            self.tensors: Mapping[str, torch.Tensor] | None = source
            self.checkpoint = None
        else:
            self.tensors, self.checkpoint = None, Checkpoint(Path(source), keep_open=False, label=label)

    def names(self) -> list[str]:
        return list(self.tensors) if self.tensors is not None else self.checkpoint.names()  # type: ignore[union-attr]

    def raw(self, name: str) -> torch.Tensor:
        return self.tensors[name] if self.tensors is not None else self.checkpoint.get(name)  # type: ignore[union-attr]

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.raw(name).to(device=like.device, dtype=like.dtype)


def frank_wolfe_merge(
    base: Source,
    pool: Sequence[Source],
    objective: Objective,
    settings: FrankWolfeSettings | None = None,
    *,
    labels: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> FrankWolfeResult:
    """Merge ``pool`` (fine-tunes of ``base``) by Frank-Wolfe on ``objective``; see the module docstring."""
    settings = settings or FrankWolfeSettings()
    if not pool:
        raise ConfigError("fw needs at least one model to merge")
    if labels is None:
        labels = [f"model {i}" if isinstance(s, Mapping) else str(s) for i, s in enumerate(pool)]
    labels = list(labels)
    if len(labels) != len(pool) or len(set(labels)) != len(labels) or {INITIAL, STAY} & set(labels):
        raise ConfigError(
            f"fw: give one distinct label per model, none {INITIAL!r} or {STAY!r}; got {labels}"
        )
    base_member = _Member(base, "base")
    members = [_Member(source, label) for source, label in zip(pool, labels)]
    theta, names = _initial(base_member, members, settings, torch.device(device))
    initial = {n: theta[n].clone() for n in names} if settings.include_initial else None
    result = FrankWolfeResult(theta)
    for t in range(settings.max_iters):
        loss, grads = _value_and_grad(objective, theta, names)
        result.losses.append(loss)
        targets, choice, gap = _linear_minimisation(grads, theta, members, initial, settings)
        result.gaps.append(gap)
        result.choices.append(choice)
        if not targets or gap <= settings.tolerance:
            return result
        step = min(1.0, settings.step_size * 2.0 / (t + 2)) * settings.scaling
        with torch.no_grad():
            for name, target in targets.items():
                theta[name].lerp_(target, step)
    with torch.no_grad():
        result.losses.append(_total(objective(theta)))
    return result


def _initial(
    base: _Member, members: list[_Member], settings: FrankWolfeSettings, device: torch.device
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """θ_0 (every base tensor; the merged ones in the compute dtype) and the names of the merged ones."""
    weights: dict[str, torch.Tensor] = {}
    names: list[str] = []
    member_names = [set(m.names()) for m in members]
    for name in base.names():
        tensor = base.raw(name).to(device)
        if not tensor.is_floating_point():
            weights[name] = tensor
            continue
        missing = next((m.label for m, have in zip(members, member_names) if name not in have), None)
        if missing is not None:
            raise IncompatibleModelsError(f"{missing}: has no tensor {name!r} (the base has)")
        dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        base_value = tensor.to(dtype).clone()
        total = torch.zeros_like(base_value)
        for member in members:
            x = member.get(name, base_value)
            if x.shape != base_value.shape:
                raise IncompatibleModelsError(
                    f"{member.label}: {name!r} has shape {list(x.shape)}, the base {list(base_value.shape)}"
                )
            total.add_(x)
        if settings.init == "average":
            base_value = total.div_(len(members))
        elif settings.init == "task_arithmetic":
            base_value.add_(total.sub_(base_value, alpha=len(members)), alpha=settings.init_scaling)
        weights[name] = base_value
        names.append(name)
    return weights, names


def _total(result: torch.Tensor | Iterable[torch.Tensor]) -> float:
    terms = [result] if isinstance(result, torch.Tensor) else result
    return float(sum(float(term.detach()) for term in terms))


def _value_and_grad(
    objective: Objective, theta: dict[str, torch.Tensor], names: list[str]
) -> tuple[float, dict[str, torch.Tensor]]:
    """f(θ) and ∇f(θ) for the merged tensors (those f does not depend on get no gradient)."""
    for name in names:
        theta[name].requires_grad_(True)
        theta[name].grad = None
    try:
        with torch.enable_grad():
            result = objective(theta)
            terms = [result] if isinstance(result, torch.Tensor) else result
            total = 0.0
            for term in terms:
                if term.requires_grad:
                    term.backward()
                total += float(term.detach())
        grads = {n: theta[n].grad for n in names if theta[n].grad is not None}
    finally:
        for name in names:
            theta[name].requires_grad_(False)
            theta[name].grad = None
    return total, {n: g for n, g in grads.items() if g is not None}


def _score(kind: str, grad: torch.Tensor, candidate: torch.Tensor, current: torch.Tensor) -> float:
    if kind == "inner":
        return float(torch.dot(grad.reshape(-1), (candidate - current).reshape(-1)))
    norms = grad.norm() * candidate.norm()
    return float(torch.dot(grad.reshape(-1), candidate.reshape(-1)) / norms) if norms > 0 else 0.0


def _linear_minimisation(
    grads: dict[str, torch.Tensor],
    theta: dict[str, torch.Tensor],
    members: list[_Member],
    initial: dict[str, torch.Tensor] | None,
    settings: FrankWolfeSettings,
) -> tuple[dict[str, torch.Tensor], dict[str, str], float]:
    """The targets the step moves towards, per tensor; the choice made per tensor; the promised decrease."""
    moving = [n for n, g in grads.items() if bool(g.any())]
    by_label = {m.label: m for m in members}

    def fetch(label: str, name: str) -> torch.Tensor:
        return (
            initial[name]
            if initial is not None and label == INITIAL
            else by_label[label].get(name, theta[name])
        )

    labels = [*by_label, *([INITIAL] if initial is not None else [])]
    # member by member: one pool model's tensors are read (and dropped) at a time
    scores = {
        label: {n: _score(settings.score, grads[n], fetch(label, n), theta[n]) for n in moving}
        for label in labels
    }
    if settings.granularity == "model":
        winner = min(labels, key=lambda label: sum(scores[label].values()))
        chosen = dict.fromkeys(moving, winner)
    else:
        chosen = {n: min(labels, key=lambda label: scores[label][n]) for n in moving}
    targets = {n: fetch(chosen[n], n) for n in moving}
    descent = {n: float(torch.dot(grads[n].reshape(-1), (targets[n] - theta[n]).reshape(-1))) for n in moving}
    if settings.granularity == "model" and sum(descent.values()) >= 0:
        keep: list[str] = []
    else:
        keep = [n for n in moving if settings.granularity == "model" or descent[n] < 0]
    choice = {n: chosen[n] if n in keep else STAY for n in moving}
    return {n: targets[n] for n in keep}, choice, -sum(descent[n] for n in keep)
