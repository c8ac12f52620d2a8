"""Zero-order layer-wise merge search in the style of MedSAMix (Yang, Su, et al. 2025).

The genome holds per-layer-group coefficients and operator choices, in layer order. Two regimes, as in the
paper: one objective (maximise a domain score) or several (a Pareto front of domain-specific vs general
scores). Proposals come in four kinds, all recorded in one Optuna study so its model learns from every
evaluation:

1. **warm**: the space's start point (typically the uniform merge) and its initial points (each source
   model alone), so the search never ends worse than the obvious merges. They come on top of the sampler's
   random start-up trials rather than replacing them.
2. **model**: TPE for one objective; NSGA-II for several (``sampler: tpe`` gives MOTPE instead; on the
   toy fronts of ``benchmarks/pareto_fronts.py`` NSGA-II plus the moves below does better beyond 3
   dimensions).
3. **local** (part of a share ``local_fraction`` of proposals, once results exist): perturb an incumbent
   (the best point, or a random member of the current Pareto front) on a contiguous *window* of
   coordinates in the unit cube (coordinates are in layer order, so a window is a band of adjacent
   layers) and sometimes switch one operator choice. The step size follows the 1/5 success rule: a local
   proposal that becomes the best (enters the front) grows it, a failed one shrinks it.
4. **relink** (the other part, ``relink_prob``, when the front has two members or more): a point on the
   line through two front members, slightly beyond either end allowed, with each operator choice taken
   from one of them. Pareto sets of merges tend to be connected paths between specialists, so moving
   along them fills the front where the model-based sampler leaves gaps.

The study lives in memory and is checkpointed whole in the state dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.optuna_search import objective_values
from evomerge.strategies.optuna_study import StudyDriver, make_sampler
from evomerge.strategies.pareto import FrontPoint
from evomerge.strategies.pending import Pending, check_ask
from evomerge.strategies.unit_cube import UnitCube
from evomerge.types import Candidate, Evaluation, Genome

GROW, SHRINK = math.exp(1 / 3), math.exp(-1 / 12)  # stationary at a 1/5 success rate
RELINK_OVERSHOOT = 0.25  # relinking may step this far beyond either end of the segment


class LayerwiseZOConfig(StrategyConfig):
    name: str = "layerwise_zo"
    sampler: Literal["auto", "tpe", "nsga2"] = Field(
        "auto", description="auto: TPE for one objective, NSGA-II for several; tpe with several is MOTPE"
    )
    n_startup_trials: int = Field(10, ge=0)
    population_size: int = Field(20, ge=2, description="NSGA-II population")
    warm_start: bool = True
    local_fraction: float = Field(0.3, ge=0, lt=1)
    local_scale: float = Field(0.15, gt=0, le=1, description="initial unit-cube std of local moves")
    local_scale_min: float = Field(0.005, gt=0, le=1)
    window: float = Field(0.34, gt=0, le=1, description="share of coordinates a local move perturbs")
    cat_flip_prob: float = Field(0.25, ge=0, le=1)
    relink_prob: float = Field(
        0.5, ge=0, le=1, description="share of refinements that relink two front members"
    )


@register_strategy
class LayerwiseZOStrategy(Strategy):
    name = "layerwise_zo"
    Config = LayerwiseZOConfig
    config: LayerwiseZOConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.queue: list[Genome] = self._warm_start() if cfg.warm_start else []
        seed = self.seed_tree.small_integer("strategy/layerwise_zo/sampler")
        sampler = make_sampler(
            cfg.sampler,
            len(self.objectives),
            seed,
            n_startup_trials=cfg.n_startup_trials + len(self.queue),  # warm points add to the random ones
            population_size=cfg.population_size,
        )
        self.driver = StudyDriver(self.space, self.objectives, sampler)
        self.cube = UnitCube(self.space)
        self.pending: Pending[tuple[int, str]] = Pending()
        self.scale = cfg.local_scale
        self.n_told = 0

    def _warm_start(self) -> list[Genome]:
        points: list[Genome] = []
        for g in [self.space.start(), *self.space.initial_points()]:
            g = self.space.clip(g)
            if g not in points:
                points.append(g)
        return points

    # ------------------------------------------------------------------ ask
    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        out: list[Candidate] = []
        incumbents = [p.genome for p in self.driver.front()] if n else []
        for _ in range(n):
            if self.queue:
                kind, fixed = "warm", self.queue.pop(0)
            elif incumbents and self.rng.random() < self.config.local_fraction:
                if len(incumbents) > 1 and self.rng.random() < self.config.relink_prob:
                    kind, fixed = "relink", self._relink(incumbents)
                else:
                    kind, fixed = "local", self._local_move(incumbents)
            else:
                kind, fixed = "model", None
            trial, genome = self.driver.ask(fixed)
            cand = self.make_candidate(
                genome, generation=self.n_told, meta={"kind": kind, "trial": trial.number}
            )
            self.driver.tag(trial, cand.uid)
            self.pending.add(cand.uid, (trial.number, kind))
            out.append(cand)
        return out

    def _local_move(self, incumbents: Sequence[Genome]) -> Genome:
        base = incumbents[int(self.rng.integers(len(incumbents)))]
        u = self.cube.to_unit(base.vector)
        if u.size:
            width = max(1, round(self.config.window * u.size))
            start = int(self.rng.integers(0, u.size - width + 1))
            u[start : start + width] += self.rng.normal(0.0, self.scale, width)
        choices = list(base.choices)
        if choices and self.rng.random() < self.config.cat_flip_prob:
            i = int(self.rng.integers(len(choices)))
            k = self.cube.n_choices[i]
            if k > 1:
                choices[i] = (choices[i] + int(self.rng.integers(1, k))) % k
        return self.space.clip(self.cube.genome(u, choices))

    def _relink(self, incumbents: Sequence[Genome]) -> Genome:
        i, j = self.rng.choice(len(incumbents), size=2, replace=False)
        a, b = incumbents[int(i)], incumbents[int(j)]
        ua, ub = self.cube.to_unit(a.vector), self.cube.to_unit(b.vector)
        w = float(self.rng.uniform(-RELINK_OVERSHOOT, 1.0 + RELINK_OVERSHOOT))
        from_a = self.rng.random(len(a.choices)) < 0.5
        choices = [ca if keep else cb for ca, cb, keep in zip(a.choices, b.choices, from_a)]
        return self.space.clip(self.cube.genome(ua + w * (ub - ua), choices))

    # ------------------------------------------------------------------ tell
    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        local: list[tuple[int, bool]] = []
        for ev, (number, kind) in self.pending.take(evaluations):
            values = objective_values(self, ev)
            self.driver.tell(number, values)
            self.n_told += 1
            if kind == "local":
                local.append((number, values is not None))
        if local:
            on_front = {p.meta["trial"] for p in self.driver.front()}
            for number, ok in local:
                success = ok and number in on_front
                self.scale = (
                    min(0.5, self.scale * GROW)
                    if success
                    else max(self.config.local_scale_min, self.scale * SHRINK)
                )

    def pareto_front(self) -> list[FrontPoint]:
        """The non-dominated evaluated candidates (for one objective: the best)."""
        return self.driver.front()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            driver=self.driver.state_dict(),
            pending=self.pending.state_dict(),
            queue=[(g.vector.copy(), g.choices) for g in self.queue],
            scale=self.scale,
            n_told=self.n_told,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pending.load_state_dict(state["pending"])
        self.driver.load_state_dict(
            state["driver"], running=[number for number, _ in self.pending.payloads()]
        )
        self.queue = [Genome(np.asarray(v), c) for v, c in state["queue"]]
        self.scale = float(state["scale"])
        self.n_told = int(state["n_told"])
